package main

import (
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
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			if !fi.Mode().IsRegular() {
				return usageError{fmt.Errorf("%s is not a regular file", args[0])}
			}
			m, err := chunkstore.HashReaderAt(cmd.Context(), f, fi.Size(), runtime.GOMAXPROCS(0))
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
