# syntax=docker/dockerfile:1
# flux-webhook: a static binary on distroless, as a non-root user, without a shell.
#   docker build --build-arg VERSION=v0.1.0 --build-arg COMMIT=$(git rev-parse HEAD) .
# The binary is built by `make build` (the Makefile's flags: CGO_ENABLED=0, -trimpath,
# version and commit stamped); deploy/deploy_test.go runs this file's build steps.
FROM golang:1.27.4-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
	make build VERSION="$VERSION" COMMIT="$COMMIT"

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/flux-webhook /flux-webhook
# nonroot, numerically, so that runAsNonRoot can verify it.
USER 65532:65532
# /hook, /healthz and /readyz, /metrics, the platform API.
EXPOSE 8080 8081 8082 8083
ENTRYPOINT ["/flux-webhook"]
CMD ["serve"]
