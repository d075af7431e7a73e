package gitea

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/webhook"
)

// PackageEvent is the part of Gitea's package event flux-webhook reads: a tag pushed to an
// OCI repository of Gitea's container registry (a Flux artifact, an OCI Helm chart). A
// workflow that pushed one posts the same document, with X-Gitea-Event: package (the
// README's example).
type PackageEvent struct {
	Action  string   `json:"action"`
	Package *Package `json:"package"`
}

// Package is the pushed package.
type Package struct {
	Owner *struct {
		Login string `json:"login"`
	} `json:"owner"`
	Name    string `json:"name"`
	Type    string `json:"type"`
	Version string `json:"version"`
	// HTMLURL is the package's page; its scheme and host are the registry's when nothing
	// better is known (claims not verified against Gitea).
	HTMLURL string `json:"html_url"`
}

var (
	// packageNamePattern is an OCI repository path component as Gitea stores it: lower
	// case (Gitea lowercases container names), digits and separators.
	packageNamePattern = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	// tagPattern is an OCI tag (distribution spec): at most 128 characters.
	tagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	// ownerPattern is a Gitea user or organisation name.
	ownerPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,100}$`)
)

// DecodePackage parses a package event from a request body of the given Content-Type, as
// DecodePush does a push event. ignored says why an event that decodes is no push to act
// on: a deletion, a package of another type, or a digest (its tag's event follows: helm and
// docker push the manifest by digest, then tag it).
func DecodePackage(contentType string, body []byte) (ev *PackageEvent, ignored string, err error) {
	body, err = jsonBody(contentType, body)
	if err != nil {
		return nil, "", err
	}
	var e PackageEvent
	if err := decodeJSON(body, &e); err != nil {
		return nil, "", err
	}
	if e.Package == nil {
		return nil, "", fmt.Errorf("%w: package is missing", webhook.ErrBadPayload)
	}
	switch {
	case e.Action != "created":
		return nil, fmt.Sprintf("package %s, not a push", printable(e.Action, 32)), nil
	case e.Package.Type != "container":
		return nil, fmt.Sprintf("a %s package, not an OCI artifact", printable(e.Package.Type, 32)), nil
	case strings.HasPrefix(e.Package.Version, "sha256:"):
		return nil, "a digest pushed, not a tag: the tag's event follows", nil
	}
	if err := e.validate(); err != nil {
		return nil, "", fmt.Errorf("%w: %v", webhook.ErrBadPayload, err)
	}
	return &e, "", nil
}

func (e *PackageEvent) validate() error {
	p := e.Package
	switch {
	case p.Owner == nil || p.Owner.Login == "":
		return errors.New("package.owner.login is missing")
	case !ownerPattern.MatchString(p.Owner.Login) || strings.Contains(p.Owner.Login, ".."):
		return errors.New("package.owner.login is not a Gitea owner")
	case len(p.Name) > maxNameLength || !packageNamePattern.MatchString(strings.ToLower(p.Name)):
		return errors.New("package.name is not an OCI repository name")
	case !tagPattern.MatchString(p.Version):
		return errors.New("package.version is not an OCI tag")
	}
	if p.HTMLURL != "" {
		if _, err := registryOf(p.HTMLURL); err != nil {
			return err
		}
	}
	return nil
}

// registryOf returns the registry host of a package page URL: Gitea serves its registry on
// its own host.
func registryOf(htmlURL string) (string, error) {
	u, err := url.Parse(htmlURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return "", errors.New("package.html_url is not an http(s) URL")
	}
	return u.Host, nil
}

// Push returns the push the event claims: a tag of the OCI repository owner/name, at the
// registry its page names. The commit it was built from is not in the event: the intake
// reads it from the artifact in the registry.
func (e *PackageEvent) Push(delivery string) gitops.Push {
	p := e.Package
	owner, name := strings.ToLower(p.Owner.Login), strings.ToLower(p.Name)
	oci := &gitops.OCI{Package: owner + "/" + name, Tag: p.Version}
	if host, err := registryOf(p.HTMLURL); err == nil {
		oci.URL = "oci://" + strings.ToLower(host) + "/" + oci.Package
	}
	return gitops.Push{Delivery: delivery, OCI: oci}
}
