package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/shoalnet/shoal/client"
	"golang.org/x/term"
)

// showProgress draws a progress bar on a terminal's stderr; on a pipe, or
// with --json, it stays quiet. The returned function stops it: at 100% when
// the download completed, else where it was. A size of 0 means not known
// yet: the bar takes the download's size once it knows it. The bar counts
// only bytes fetched in this run, so its rate and time left are true for a
// resumed download; its description says what was resumed.
func showProgress(g *globals, d *client.Download, quiet bool, size int64) func(complete bool) {
	f, ok := g.stderr.(*os.File)
	if quiet || !ok || !term.IsTerminal(int(f.Fd())) {
		return func(bool) {}
	}
	return progressBar(f, d, size)
}

// progressBar draws the bar of showProgress on w.
func progressBar(w io.Writer, d progressSource, size int64) func(complete bool) {
	f := w
	if size <= 0 {
		size = -1 // a spinner until the size is known
	}
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(f),
		progressbar.OptionShowBytes(true),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionFullWidth(),
	)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			p := d.Progress()
			if want := p.Size - p.Resumed; p.Size > 0 && bar.GetMax64() != want {
				bar.ChangeMax64(want)
			}
			desc := plural(p.ActivePeers, "peer")
			if p.Resumed > 0 {
				desc += ", " + humanBytes(p.Resumed) + " resumed"
			}
			bar.Describe(desc)
			bar.Set64(p.Fetched)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func(complete bool) {
		close(done)
		<-finished
		if complete {
			bar.Finish()
		} else {
			bar.Exit()
		}
		fmt.Fprintln(f)
	}
}

// progressSource is what the bar reads: a download's progress.
type progressSource interface{ Progress() client.Progress }

// plural says n things: "1 peer", "2 peers".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// summary is the line a finished download prints.
func summary(out string, rep *client.Report, id string) string {
	if rep.AlreadyDone {
		return fmt.Sprintf("%s is already complete (%s)", out, id)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: ", out)
	if rep.Files > 0 {
		fmt.Fprintf(&b, "%s, ", plural(rep.Files, "file"))
	}
	b.WriteString(humanBytes(rep.Size))
	if rep.FilesReused > 0 {
		fmt.Fprintf(&b, " (%s kept from the folder there)", plural(rep.FilesReused, "file"))
	}
	if rep.BytesResumed > 0 {
		fmt.Fprintf(&b, " (%s resumed from %s.part, %s fetched)", humanBytes(rep.BytesResumed), out, humanBytes(rep.BytesFetched))
	}
	switch n := len(rep.Peers); {
	case rep.BytesFetched == 0:
		fmt.Fprintf(&b, " in %.1fs, nothing to fetch", rep.Seconds)
	default:
		fmt.Fprintf(&b, " in %.1fs (%s) from %s", rep.Seconds, humanRate(rep.BytesFetched, rep.Seconds), plural(n, "peer"))
	}
	fmt.Fprintf(&b, ", verified %s", id)
	return b.String()
}

// humanRate is bytes over seconds in IEC units per second.
func humanRate(bytes int64, seconds float64) string {
	if seconds <= 0 {
		return "instant"
	}
	return humanBytes(int64(float64(bytes)/seconds)) + "/s"
}

// jsonReport is what --json prints: the report, how the download ended,
// and on failure the error, so that scripts need not read stderr.
type jsonReport struct {
	*client.Report
	// Outcome is complete, interrupted or failed.
	Outcome string `json:"outcome"`
	// Error is the message a failure printed on stderr.
	Error string `json:"error,omitempty"`
}

// printReport writes a download's report on stdout as indented JSON; rep
// may be nil when the download failed before it began.
func printReport(g *globals, rep *client.Report, err error) error {
	if rep == nil {
		rep = &client.Report{Peers: []client.PeerReport{}}
	}
	out := jsonReport{Report: rep, Outcome: "complete"}
	switch {
	case errors.Is(err, context.Canceled) || exitCode(err, io.Discard) == exitCanceled:
		out.Outcome, out.Error = "interrupted", err.Error()
	case err != nil:
		out.Outcome, out.Error = "failed", err.Error()
	}
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
