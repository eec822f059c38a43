package main

import (
	"context"
	"fmt"
	"os"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/shoalnet/shoal/chunkstore"
)

func newHashCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "hash FILE_OR_FOLDER",
		Short:   "Print a file's content id and manifest summary, or a folder's tree id",
		Example: "  shoal hash ./shared/big.iso\n  shoal hash ./shared/photos",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if fi, err := os.Stat(args[0]); err == nil && fi.IsDir() {
				t, err := hashTree(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				files, size := t.Files()
				fmt.Fprintf(g.stdout, "%s\n  files:   %d, %d bytes\n  entries: %d\n", t.ID, files, size, len(t.Entries))
				return nil
			}
			m, err := hashFile(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s\n", m.ID)
			fmt.Fprintf(g.stdout, "  size:   %d bytes\n  chunks: %d of %d bytes\n  root:   %x\n",
				m.Size, m.NumChunks(), m.ChunkSize, chunkstore.MerkleRoot(m.Hashes))
			return nil
		},
	}
}

// hashFile computes the manifest of the regular file at path.
func hashFile(ctx context.Context, path string) (*chunkstore.Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, usageError{fmt.Errorf("%s is not a regular file", path)}
	}
	return chunkstore.HashReaderAt(ctx, f, fi.Size(), runtime.GOMAXPROCS(0))
}

// hashTree computes the tree of the folder at dir: every file below it
// hashed.
func hashTree(ctx context.Context, dir string) (*chunkstore.Tree, error) {
	st, err := chunkstore.Open(chunkstore.Config{Dir: dir})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := st.Scan(ctx); err != nil {
		return nil, err
	}
	return st.Tree("")
}
