package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
)

// globals holds the flags every command shares.
type globals struct {
	logLevel  string
	logFormat string
	cpuProf   string
	memProf   string
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
}

// logger builds the slog logger the flags ask for, writing to stderr.
func (g *globals) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: use debug, info, warn or error", g.logLevel)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(g.logFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(g.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.stderr, opts)), nil
	default:
		return nil, usageError{fmt.Errorf("--log-format %q: use text or json", g.logFormat)}
	}
}

func newRootCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "shoal",
		Short: "Peer-to-peer file transfer over gRPC",
		Long: `shoal moves files between peers. Every peer serves a folder over gRPC and
announces it to a registry; a download fans out over several peers at once,
verifies every chunk, and resumes after a crash.`,
		Example: `  shoal demo                                   # try it: a local cluster and a download
  shoal serve --dir ./shared --listen 127.0.0.1:7070
  shoal get big.iso --registry 127.0.0.1:7000`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format on stderr: text or json")
	root.PersistentFlags().StringVar(&g.cpuProf, "cpuprofile", "", "write a Go CPU profile of the command to this file")
	root.PersistentFlags().MarkHidden("cpuprofile")
	root.PersistentFlags().StringVar(&g.memProf, "memprofile", "", "write Go heap profiles to this file (allocations over the run) and to this file .peak (in use when the heap was largest)")
	root.PersistentFlags().MarkHidden("memprofile")
	var stopProf func()
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if _, err := g.logger(); err != nil {
			return err // a bad --log-level or --log-format, whether the command logs or not
		}
		stop, err := startProfiles(g.cpuProf, g.memProf)
		stopProf = stop
		return err
	}
	root.PersistentPostRun = func(*cobra.Command, []string) {
		if stopProf != nil {
			stopProf()
		}
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newServeCmd(g), newHashCmd(g), newRegistryCmd(g), newLsCmd(g), newClusterCmd(g), newGetCmd(g), newVerifyCmd(g), newShareCmd(g), newDemoCmd(g), newCertsCmd(g), newCourseCmd(g))
	return root
}

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
