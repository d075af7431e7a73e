package enroll

import (
	"context"

	"golang.org/x/time/rate"

	"github.com/openova-io/flux-webhook/internal/credentials"
)

// limited is a Forge whose calls wait for a token bucket.
type limited struct {
	f Forge
	l *rate.Limiter
}

// limit bounds f's calls to perSecond (DefaultCallsPerSecond when zero, none when negative).
func limit(f Forge, perSecond float64) Forge {
	if perSecond < 0 {
		return f
	}
	if perSecond == 0 {
		perSecond = DefaultCallsPerSecond
	}
	if l, ok := f.(*limited); ok {
		f = l.f
	}
	return &limited{f: f, l: rate.NewLimiter(rate.Limit(perSecond), callBurst)}
}

func (l *limited) PutSecret(ctx context.Context, s credentials.Scope, name, value string) error {
	if err := l.l.Wait(ctx); err != nil {
		return err
	}
	return l.f.PutSecret(ctx, s, name, value)
}

func (l *limited) HasSecret(ctx context.Context, s credentials.Scope, name string) (bool, error) {
	if err := l.l.Wait(ctx); err != nil {
		return false, err
	}
	return l.f.HasSecret(ctx, s, name)
}

func (l *limited) Variable(ctx context.Context, s credentials.Scope, name string) (string, bool, error) {
	if err := l.l.Wait(ctx); err != nil {
		return "", false, err
	}
	return l.f.Variable(ctx, s, name)
}

func (l *limited) PutVariable(ctx context.Context, s credentials.Scope, name, value string, exists bool) error {
	if err := l.l.Wait(ctx); err != nil {
		return err
	}
	return l.f.PutVariable(ctx, s, name, value, exists)
}

func (l *limited) OrgHooks(ctx context.Context, org string) ([]Hook, error) {
	if err := l.l.Wait(ctx); err != nil {
		return nil, err
	}
	return l.f.OrgHooks(ctx, org)
}

func (l *limited) CreateOrgHook(ctx context.Context, org string, h Hook, secret string) (int64, error) {
	if err := l.l.Wait(ctx); err != nil {
		return 0, err
	}
	return l.f.CreateOrgHook(ctx, org, h, secret)
}

func (l *limited) EditOrgHook(ctx context.Context, org string, h Hook) error {
	if err := l.l.Wait(ctx); err != nil {
		return err
	}
	return l.f.EditOrgHook(ctx, org, h)
}

func (l *limited) DeleteOrgHook(ctx context.Context, org string, id int64) error {
	if err := l.l.Wait(ctx); err != nil {
		return err
	}
	return l.f.DeleteOrgHook(ctx, org, id)
}
