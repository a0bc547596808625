# syntax=docker/dockerfile:1
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
COPY patches/ patches/
COPY webhook/ webhook/
COPY certs/ certs/
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/brokerport ./cmd/brokerport

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/brokerport /brokerport
USER 65532:65532
ENTRYPOINT ["/brokerport"]
CMD ["serve"]
