package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
)

// isFolderTarget reports whether get should fetch target as a folder: a
// tree id, or a name the file lookup said names a folder (or found no
// file for: "photos" may be the folder "photos/").
func isFolderTarget(target string, lookupErr error) bool {
	if _, err := chunkstore.ParseTreeID(target); err == nil {
		return true
	}
	if errors.Is(lookupErr, client.ErrIsFolder) {
		return true
	}
	_, idErr := chunkstore.ParseID(target)
	return errors.Is(lookupErr, client.ErrNotFound) && idErr != nil
}

// getFolder fetches the folder target into the folder the flags name.
// fileErr is why it is not a file, returned when no folder has the name
// either.
func getFolder(ctx context.Context, g *globals, target string, f getFlags, cc *grpc.ClientConn, dial []grpc.DialOption, fileErr error) error {
	if f.out == "-" || f.out == "/dev/stdout" {
		return usageError{fmt.Errorf("%s is a folder: it cannot be written to stdout", chunkstore.Clip(target))}
	}
	reg := f.lookup(cc, dial, target)
	folder, err := reg.Folder(ctx)
	if errors.Is(err, client.ErrIsFile) || errors.Is(err, client.ErrNotFound) && fileErr != nil {
		err = fileErr
	}
	if err != nil {
		err = getError(f.conn.explain(ctx, f.registry, err))
		if f.json {
			if perr := printReport(g, nil, err); perr != nil {
				return perr
			}
		}
		return err
	}
	id := folder.Tree.ID.String()
	name := strings.TrimSuffix(folder.Name, "/")
	if f.linkName != "" {
		name = strings.TrimSuffix(f.linkName, "/")
	}
	var out string
	if f.parents && name != "." && name != "" {
		if out, err = parentsPath(f.out, name); err != nil {
			return usageError{err}
		}
	} else {
		out = folderPath(f.out, name, id)
	}
	if f.out == "" && !safeName(path.Base(name)) {
		fmt.Fprintf(g.stderr, "the network names this folder %s; writing it as %s (use -o to choose a name)\n", chunkstore.Clip(folder.Name), out)
	}
	cfg := f.config()
	cfg.Force = f.force
	var rep *client.Report
	if f.serve {
		rep, err = serveWhileGetting(ctx, g, f, cfg, reg, out, folder.Name)
	} else {
		d := client.NewTreeDownload(cfg, reg, out)
		stop := showProgress(g, d, f.json, folderSize(folder))
		rep, err = d.Run(ctx)
		stop(err == nil)
	}
	if err != nil {
		err = downloadError(ctx, out, rep, err)
	}
	if f.json {
		if perr := printReport(g, rep, err); perr != nil {
			return perr
		}
	}
	if err != nil {
		return err
	}
	if !f.json && !f.serve {
		fmt.Fprintln(g.stdout, summary(out, rep, id))
	}
	return nil
}

// folderPath is where a folder the network names name is written: at out
// itself (created, or updated with --force); inside out under the name's
// last element when out ends in a separator; in the current folder when
// out is empty. fallback stands in for a name a stranger should not
// choose, and for the shared folder itself ("./").
func folderPath(out, name, fallback string) string {
	base := path.Base(name)
	if !safeName(base) {
		base = fallback
	}
	if out != "" && !os.IsPathSeparator(out[len(out)-1]) {
		return out
	}
	return filepath.Join(out, base)
}

// folderSize is the bytes a folder download fetches: each distinct file
// once.
func folderSize(f *client.Folder) int64 {
	var n int64
	for _, m := range f.Files {
		n += m.Size
	}
	return n
}
