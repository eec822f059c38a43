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
		Use:     "hash FILE",
		Short:   "Print a file's content id and manifest summary",
		Example: "  shoal hash ./shared/big.iso",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
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
