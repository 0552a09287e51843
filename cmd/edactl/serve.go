package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/edaproject/eda/console"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/pgxstore"
)

// tokenCookie keeps the -token a browser gave once (?token=...).
const tokenCookie = "eda_console_token"

func runServe(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("serve", "-transport aws|postgres [-outbox-db DB] [-addr 127.0.0.1:8090] [-token t] [-read-only]")
	kind := fs.String("transport", envOr("EDA_TRANSPORT", ""), "aws or postgres (env EDA_TRANSPORT)")
	var af awsFlags
	af.register(fs)
	var pf pgFlags
	pf.register(fs)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address; any but a loopback one needs -token")
	token := fs.String("token", os.Getenv("EDA_CONSOLE_TOKEN"), "token every request must carry (Authorization: Bearer, or ?token= once) (env EDA_CONSOLE_TOKEN)")
	readOnly := fs.Bool("read-only", false, "refuse every action (redrive, discard, retry)")
	prefix := fs.String("prefix", "", "only queues and topics whose name starts with this")
	obDB := fs.String("outbox-db", os.Getenv("EDA_OUTBOX_DB"), "the outbox: postgres:// URL (pgxstore) or SQLite file (env EDA_OUTBOX_DB); empty: none")
	obSchema := fs.String("outbox-schema", pgxstore.DefaultSchema, "Postgres: schema of the outbox table")
	obTable := fs.String("outbox-table", pgxstore.DefaultTable, "table of the outbox")
	maxLag := fs.Duration("max-outbox-lag", console.DefaultMaxOutboxLag, "mark the outbox when its lag is over this")
	refresh := fs.Duration("refresh", console.DefaultRefresh, "how often the overview refreshes")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected arguments %q", pos)
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return usagef("-addr %q: %v", *addr, err)
	}
	if !isLoopback(host) && *token == "" {
		return usagef("-addr %s is not a loopback address: pass -token (or EDA_CONSOLE_TOKEN) so only its holders reach the console", *addr)
	}
	cfg := console.Config{ReadOnly: *readOnly, QueuePrefix: *prefix, MaxOutboxLag: *maxLag, Refresh: *refresh,
		Logger: slog.New(slog.NewTextHandler(c.stderr, nil))}
	switch *kind {
	case "aws":
		awsCfg, err := af.config(ctx)
		if err != nil {
			return err
		}
		tc := af.transportConfig(awsCfg, false)
		cfg.AWS = &tc
	case "postgres":
		if pf.dsn == "" {
			return usagef("-transport postgres needs -db postgres://...")
		}
		pool, err := connectPostgres(ctx, pf.dsn)
		if err != nil {
			return err
		}
		defer pool.Close()
		cfg.Postgres = &console.PostgresConfig{Pool: pool, Schema: pf.schema}
	case "":
		return usagef("-transport is required: aws or postgres")
	default:
		return usagef("-transport %q: want aws or postgres", *kind)
	}
	if *obDB != "" {
		store, closeStore, err := openOutbox(ctx, *obDB, *obSchema, *obTable)
		if err != nil {
			return err
		}
		defer closeStore()
		cfg.Outbox = store.(outbox.Store)
	}
	h, err := console.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer h.Close()
	var handler http.Handler = h
	if *token != "" {
		handler = requireToken(*token, h)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(c.stdout, "console on http://%s/ (%s%s); Ctrl-C stops\n", ln.Addr(), *kind, map[bool]string{true: ", read-only"}[*readOnly])
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// isLoopback tells whether host is a loopback address or localhost.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// requireToken lets through the requests that carry token: as a bearer
// token, in the cookie a first ?token= visit sets, or in ?token= itself.
func requireToken(token string, next http.Handler) http.Handler {
	ok := func(s string) bool { return subtle.ConstantTimeCompare([]byte(s), []byte(token)) == 1 }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); len(a) > 7 && a[:7] == "Bearer " && ok(a[7:]) {
			next.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(tokenCookie); err == nil && ok(c.Value) {
			next.ServeHTTP(w, r)
			return
		}
		if q := r.URL.Query().Get("token"); q != "" && ok(q) && r.Method == http.MethodGet {
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			u := *r.URL
			qs := u.Query()
			qs.Del("token")
			u.RawQuery = qs.Encode()
			http.Redirect(w, r, u.String(), http.StatusSeeOther)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="eda console"`)
		http.Error(w, "eda console: a token is required (Authorization: Bearer <token>, or open /?token=<token> once)", http.StatusUnauthorized)
	})
}
