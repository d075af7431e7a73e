package server

import "time"

const (
	// maxBodyBytes caps a /hook body. Gitea's push payload lists at most a few dozen
	// commits (setting webhook.PAYLOAD_COMMIT_LIMIT-like caps); 3 MiB leaves room for long
	// messages, as Flux's own receiver does.
	maxBodyBytes = 3 << 20

	// maxHeaderBytes caps request headers: Gitea sends a handful.
	maxHeaderBytes = 64 << 10

	// readHeaderTimeout and readTimeout bound a slow sender (slowloris): a client gets 10 s
	// for its headers and 30 s for its whole request.
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second

	// writeTimeout bounds writing an answer. /hook answers within Gitea's 5 s delivery
	// timeout, the patches being done first.
	writeTimeout = 30 * time.Second

	// idleTimeout closes keep-alive connections nobody uses.
	idleTimeout = 2 * time.Minute

	// shutdownTimeout is how long in-flight requests get to finish on shutdown, within a
	// pod's default 30 s termination grace period.
	shutdownTimeout = 20 * time.Second

	// retryAfterSeconds is what a 503 tells the sender to wait before retrying.
	retryAfterSeconds = "10"

	// maxAPIBodyBytes caps a platform API request: a selector is a few hundred bytes.
	maxAPIBodyBytes = 64 << 10

	// defaultWait and maxWait bound /hook?wait=true: a workflow step waits for Flux at most
	// this long (the commit statuses follow anyway).
	defaultWait = 5 * time.Minute
	maxWait     = 30 * time.Minute
)
