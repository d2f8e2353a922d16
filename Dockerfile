# syntax=docker/dockerfile:1
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/regmirror . \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/regmirror /usr/local/bin/regmirror
COPY --from=build --chown=65532:65532 /out/data /data
ENV REGMIRROR_DATA_DIR=/data \
    REGMIRROR_LISTEN=:5000
VOLUME ["/data"]
EXPOSE 5000
USER 65532:65532
# The image has no shell or curl: the binary asks its own /readyz.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/regmirror", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/regmirror"]
CMD ["serve"]
