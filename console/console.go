package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/internal/ops"
	"github.com/edaproject/eda/outbox"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// Defaults of Config.
const (
	DefaultRefresh      = 2 * time.Second
	DefaultMaxOutboxLag = time.Minute
	DefaultPageSize     = 50
	DefaultPeekLimit    = 100
	DefaultFailedLimit  = 500
)

// ErrInvalidConfig is returned by New for a Config that cannot work.
var ErrInvalidConfig = errors.New("console: invalid config")

// PostgresConfig names the Postgres transport's tables.
type PostgresConfig struct {
	// Pool reaches the database; it stays the caller's. Required.
	Pool *pgxpool.Pool
	// Schema of the transport's tables. Required.
	Schema string
}

// Config configures a console. Exactly one of Postgres and AWS is set.
type Config struct {
	// Postgres: the console reads the Postgres transport's tables.
	Postgres *PostgresConfig
	// AWS: the console reads SQS and SNS with this configuration (the
	// transport's own; AutoCreate is ignored: the console creates only
	// the temporary queues of its tails, edactl-tail-*).
	AWS *edaaws.Config
	// Outbox, when set, is the outbox whose backlog and failed records the
	// console shows.
	Outbox outbox.Store
	// QueuePrefix limits the console to the queues and topics whose name
	// starts with it (an environment sharing a broker).
	QueuePrefix string
	// ReadOnly refuses every state-changing request (and hides their
	// buttons).
	ReadOnly bool
	// Logger receives one record per action (what, how many, from where)
	// and the errors of pages. Nil discards.
	Logger *slog.Logger
	// MaxOutboxLag: an outbox lag over it is marked on the overview.
	// Default DefaultMaxOutboxLag.
	MaxOutboxLag time.Duration
	// Refresh is how often the overview refreshes itself. Default
	// DefaultRefresh.
	Refresh time.Duration
	// PageSize is how many dead letters a page shows. Default
	// DefaultPageSize.
	PageSize int
	// PeekLimit is how many messages a page of an SQS dead-letter queue
	// peeks at (SQS cannot page). Default DefaultPeekLimit, at most 1000.
	PeekLimit int
	// FailedLimit is how many failed outbox records the outbox page lists
	// (the count is always the total). Default DefaultFailedLimit.
	FailedLimit int
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Postgres == nil && c.AWS == nil:
		errs = append(errs, fmt.Errorf("%w: set Postgres or AWS", ErrInvalidConfig))
	case c.Postgres != nil && c.AWS != nil:
		errs = append(errs, fmt.Errorf("%w: set Postgres or AWS, not both", ErrInvalidConfig))
	}
	if c.Postgres != nil {
		if c.Postgres.Pool == nil {
			errs = append(errs, fmt.Errorf("%w: Postgres.Pool is required", ErrInvalidConfig))
		}
		if c.Postgres.Schema == "" {
			errs = append(errs, fmt.Errorf("%w: Postgres.Schema is required", ErrInvalidConfig))
		}
	}
	for name, v := range map[string]int{"PageSize": c.PageSize, "PeekLimit": c.PeekLimit, "FailedLimit": c.FailedLimit} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%w: %s %d is negative", ErrInvalidConfig, name, v))
		}
	}
	if c.PeekLimit > 1000 {
		errs = append(errs, fmt.Errorf("%w: PeekLimit %d: at most 1000", ErrInvalidConfig, c.PeekLimit))
	}
	if c.MaxOutboxLag < 0 || c.Refresh < 0 {
		errs = append(errs, fmt.Errorf("%w: MaxOutboxLag and Refresh must not be negative", ErrInvalidConfig))
	}
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxOutboxLag == 0 {
		c.MaxOutboxLag = DefaultMaxOutboxLag
	}
	if c.Refresh == 0 {
		c.Refresh = DefaultRefresh
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.PeekLimit == 0 {
		c.PeekLimit = DefaultPeekLimit
	}
	if c.FailedLimit == 0 {
		c.FailedLimit = DefaultFailedLimit
	}
}

//go:embed assets templates
var files embed.FS

// Handler is the console. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	dlq    ops.DLQ
	broker string // "postgres" or "aws"
	tmpl   *template.Template
	mux    *http.ServeMux
	log    *slog.Logger
	cop    *http.CrossOriginProtection

	mu    sync.Mutex
	tails map[string]bool // running tails' temporary queues
}

var _ http.Handler = (*Handler)(nil)

// New returns a console on cfg's broker. Close releases what it made.
func New(ctx context.Context, cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	h := &Handler{cfg: cfg, log: cfg.Logger, tails: map[string]bool{}, cop: http.NewCrossOriginProtection()}
	if cfg.Postgres != nil {
		d, err := ops.NewPostgresDLQ(ctx, cfg.Postgres.Pool, cfg.Postgres.Schema)
		if err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		h.dlq, h.broker = d, "postgres"
	} else {
		c := *cfg.AWS
		c.AutoCreate = false
		tr, err := edaaws.New(c)
		if err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		h.dlq, h.broker = ops.NewAWSDLQ(tr, 0), "aws"
	}
	t, err := template.New("").Funcs(funcs).ParseFS(files, "templates/*.html")
	if err != nil {
		h.dlq.Close()
		return nil, fmt.Errorf("console: templates: %w", err)
	}
	h.tmpl = t
	h.routes()
	return h, nil
}

// Close releases the console's broker clients (not a pool it was given).
func (h *Handler) Close() { h.dlq.Close() }

func (h *Handler) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(files, "assets")
	m.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServerFS(static)))
	m.HandleFunc("GET /{$}", h.overview)
	m.HandleFunc("GET /overview/live", h.overviewLive)
	m.HandleFunc("GET /dlq", h.deadLetters)
	m.HandleFunc("POST /dlq", h.deadLetterAction)
	m.HandleFunc("GET /outbox", h.outboxPage)
	m.HandleFunc("POST /outbox", h.outboxAction)
	m.HandleFunc("GET /tail", h.tailPage)
	m.HandleFunc("GET /tail/events", h.tailEvents)
	h.mux = m
}

// csrfCookie holds the browser's CSRF token; every form repeats it in the
// csrfField field (the double-submit pattern), on top of Go's
// CrossOriginProtection (Sec-Fetch-Site and Origin).
const (
	csrfCookie = "eda_console_csrf"
	csrfField  = "csrf"
)

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	w.Header().Set("Referrer-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if h.cfg.ReadOnly {
			h.refuse(w, r, http.StatusForbidden, "this console is read-only: nothing was changed")
			return
		}
		if err := h.cop.Check(r); err != nil {
			h.refuse(w, r, http.StatusForbidden, "cross-origin request refused: nothing was changed")
			return
		}
		c, err := r.Cookie(csrfCookie)
		got := r.PostFormValue(csrfField)
		if err != nil || c.Value == "" || got == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(got)) != 1 {
			h.refuse(w, r, http.StatusForbidden, "missing or wrong CSRF token (reload the page and try again): nothing was changed")
			return
		}
	}
	h.mux.ServeHTTP(w, r)
}

// token returns the CSRF token of the browser, setting the cookie when it
// has none.
func (h *Handler) token(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 32 {
		return c.Value
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	v := hex.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: v, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	return v
}

// refuse answers a request the console will not carry out.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	h.log.Warn("console: request refused", "method", r.Method, "path", r.URL.Path, "status", code, "reason", msg, "remote", r.RemoteAddr)
	h.render(w, r, code, "error", page{Title: http.StatusText(code), Error: msg})
}

// page is what every template gets.
type page struct {
	Title    string
	Nav      string
	Base     string // the path the console is mounted at, "" or "/console"
	CSRF     string
	ReadOnly bool
	Broker   string
	Prefix   string
	Error    string
	Notice   string
	Data     any
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, code int, name string, p page) {
	p.CSRF = h.token(w, r)
	p.ReadOnly, p.Broker, p.Prefix = h.cfg.ReadOnly, h.broker, h.cfg.QueuePrefix
	p.Base = base(r)
	var b strings.Builder
	if err := h.tmpl.ExecuteTemplate(&b, name, p); err != nil {
		h.log.Error("console: render", "template", name, "err", err)
		http.Error(w, "console: render "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}

// base is the path prefix a parent mux stripped (http.StripPrefix keeps
// the original in RequestURI), so links work wherever the console is
// mounted.
func base(r *http.Request) string {
	uri := r.RequestURI
	if i := strings.IndexAny(uri, "?#"); i >= 0 {
		uri = uri[:i]
	}
	if strings.HasSuffix(uri, r.URL.Path) {
		return strings.TrimSuffix(uri[:len(uri)-len(r.URL.Path)], "/")
	}
	return ""
}

// remote is where a request came from, for the action logs.
func remote(r *http.Request) string {
	if f := r.Header.Get("X-Forwarded-For"); f != "" {
		return r.RemoteAddr + " (forwarded for " + f + ")"
	}
	return r.RemoteAddr
}
