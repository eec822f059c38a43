package main

import (
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoalnet/shoal/chunkstore"
)

// A share link bundles what `get` needs: shoal:ID?name=NAME&registry=HOST:PORT.
// ID is a file's content id (sh1...) or a folder's tree id (st1...); name
// is what the sharer called it; registry is where to look it up.
const linkScheme = "shoal:"

// shareLink is a parsed share link.
type shareLink struct {
	id       string // sh1... or st1...
	name     string // may be empty
	registry string // host:port; may be empty
}

func (l shareLink) String() string {
	q := url.Values{}
	if l.name != "" {
		q.Set("name", l.name)
	}
	if l.registry != "" {
		q.Set("registry", l.registry)
	}
	s := linkScheme + l.id
	if len(q) > 0 {
		s += "?" + q.Encode()
	}
	return s
}

// parseLink reads a share link; ok is false for anything that is not one.
func parseLink(s string) (shareLink, bool, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), linkScheme)
	if !ok {
		return shareLink{}, false, nil
	}
	idText, query, _ := strings.Cut(rest, "?")
	_, ferr := chunkstore.ParseID(idText)
	_, terr := chunkstore.ParseTreeID(idText)
	if ferr != nil && terr != nil {
		return shareLink{}, true, fmt.Errorf("link %s: %s is no content id", chunkstore.Clip(s), chunkstore.Clip(idText))
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return shareLink{}, true, fmt.Errorf("link %s: %w", chunkstore.Clip(s), err)
	}
	return shareLink{id: strings.ToLower(idText), name: q.Get("name"), registry: q.Get("registry")}, true, nil
}

func newShareCmd(g *globals) *cobra.Command {
	var registry string
	cmd := &cobra.Command{
		Use:   "share PATH",
		Short: "Print a link that `shoal get` fetches with no other flag",
		Long: `share hashes PATH (a file, or a folder: every file below it) and prints a
share link: shoal:ID?name=NAME&registry=HOST:PORT. ID is the file's content
id or the folder's tree id; the registry is --registry, $SHOAL_REGISTRY, or
127.0.0.1:7000. PATH must be served by a peer announcing to that registry
(shoal serve or cluster) for the link to be fetched.`,
		Example: `  shoal share ./shared/big.iso --registry 10.0.0.5
  shoal get 'shoal:sh1...?name=big.iso&registry=10.0.0.5:7000'`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, err := registryAddr(cmd.Context(), "--registry", firstOf(registry, os.Getenv("SHOAL_REGISTRY")))
			if err != nil {
				return err
			}
			fi, err := os.Stat(args[0])
			if err != nil {
				return err
			}
			abs, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			link := shareLink{name: path.Base(filepath.ToSlash(abs)), registry: reg}
			switch {
			case fi.Mode().IsRegular():
				m, err := hashFile(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				link.id = m.ID.String()
			case fi.IsDir():
				t, err := hashTree(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				link.id = t.ID.String()
			default:
				return usageError{fmt.Errorf("%s is neither a file nor a folder", args[0])}
			}
			fmt.Fprintln(g.stdout, link)
			return nil
		},
	}
	cmd.Flags().StringVar(&registry, "registry", "", "registry the link names, host[:port] (default $SHOAL_REGISTRY, else "+defaultRegistry+")")
	return cmd
}
