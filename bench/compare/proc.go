package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a background process the bench started; stop ends it by its PID.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *lineLog
	done chan struct{}
}

// lineLog keeps a process's output lines so the bench can wait for one.
type lineLog struct {
	lines chan string
}

// start runs argv in the background, its output collected line by line.
func start(name string, argv ...string) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, out: &lineLog{lines: make(chan string, 1024)}, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			select {
			case p.out.lines <- sc.Text():
			default:
			}
		}
		close(p.out.lines)
	}()
	go func() {
		cmd.Wait()
		w.Close()
		close(p.done)
	}()
	return p, nil
}

// waitLine waits up to timeout for an output line matching re and returns
// its submatches.
func (p *proc) waitLine(re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l, ok := <-p.out.lines:
			if !ok {
				return nil, fmt.Errorf("%s exited before printing /%s/", p.name, re)
			}
			if m := re.FindStringSubmatch(l); m != nil {
				return m, nil
			}
		case <-t.C:
			return nil, fmt.Errorf("%s: no line matching /%s/ within %s", p.name, re, timeout)
		}
	}
}

// stop sends SIGTERM to the process group by PID, then SIGKILL after 5 s.
func (p *proc) stop() {
	if p == nil {
		return
	}
	pid := p.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	}
}

// maxRSS is the peak resident set of a process that has exited, in bytes.
func (p *proc) maxRSS() int64 {
	select {
	case <-p.done:
	default:
		return 0
	}
	if ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss << 10
	}
	return 0
}

// result is one timed run of a command to completion.
type result struct {
	wall    time.Duration
	cpu     time.Duration // user + system
	machine time.Duration // busy CPU time of the whole machine during the run
	maxRSS  int64         // bytes
}

// clockTicks is USER_HZ, the unit of the times in /proc/stat: 100 on every
// Linux ABI.
const clockTicks = 100

// machineCPU is the busy time of all CPUs since boot (user, nice, system,
// irq and softirq in /proc/stat): it counts the sources' work, the
// downloader's, and the network stack's wherever the kernel ran it.
func machineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return busyTime(string(b))
}

// busyTime reads the busy time from the text of /proc/stat.
func busyTime(stat string) (time.Duration, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var ticks int64
	for _, k := range []int{1, 2, 3, 6, 7} { // user nice system _ _ irq softirq
		v, err := strconv.ParseInt(f[k], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// timed runs argv to completion and measures it.
func timed(ctx context.Context, argv ...string) (result, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	busy0, err := machineCPU()
	if err != nil {
		return result{}, err
	}
	t0 := time.Now()
	err = cmd.Run()
	wall := time.Since(t0)
	if err != nil {
		return result{}, fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, tail(out.String(), 2000))
	}
	busy1, err := machineCPU()
	if err != nil {
		return result{}, err
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	r := result{wall: wall, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), machine: busy1 - busy0}
	if ru != nil {
		r.maxRSS = ru.Maxrss << 10
	}
	return r, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// freePorts reserves n loopback ports and releases them for a process to
// bind.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitTCP waits until addr accepts connections.
func waitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not accept connections within %s", addr, timeout)
}

// sameSize checks that a downloaded file has the expected size.
func sameSize(path string, size int64) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Size() != size {
		return fmt.Errorf("%s: %d bytes, want %d", path, fi.Size(), size)
	}
	return nil
}

// dropOutput removes a downloaded file and flushes dirty pages so the next
// run starts from the same state.
func dropOutput(paths ...string) error {
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	syscall.Sync()
	return nil
}
