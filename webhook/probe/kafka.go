package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DialFunc opens a connection (net.Dialer.DialContext in production).
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// maxResponse bounds a Kafka response the probe reads: a Metadata response that asks for no
// topic lists brokers only.
const maxResponse = 1 << 20

// errNotKafka is what an answer that is not a Kafka response is said to be. It repeats nothing of
// what was read (no size, no correlation ID, no decoder detail): those are bytes of a listener that
// may be anything, and the error goes into Events and a ConfigMap (an SSH server's "SSH-" read as
// a length was 1397966893).
var errNotKafka = errors.New("not a Kafka listener (its answer is not a Kafka response)")

// Observe dials addr and, by mode, asks the Kafka listener there ApiVersions and Metadata on
// that one connection, which it closes before returning. ctx bounds everything.
func Observe(ctx context.Context, dial DialFunc, addr string, mode Mode) Observation {
	start := time.Now()
	obs := observe(ctx, dial, addr, mode)
	obs.Latency = time.Since(start)
	return obs
}

func observe(ctx context.Context, dial DialFunc, addr string, mode Mode) Observation {
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return Observation{Err: connectError(err)}
	}
	defer conn.Close()
	if mode == TCP {
		return Observation{}
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	// Closing the connection when ctx ends unblocks a read the deadline does not cover.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	versions := kmsg.NewPtrApiVersionsRequest() // v0: every Kafka-API broker answers it
	resp, err := roundTrip(conn, versions, 1)
	if err != nil {
		return Observation{Err: fmt.Errorf("kafka ApiVersions: %w", requestError(ctx, err))}
	}
	apiVersions := resp.(*kmsg.ApiVersionsResponse)
	if err := kerr.ErrorForCode(apiVersions.ErrorCode); err != nil {
		return Observation{Err: fmt.Errorf("kafka ApiVersions: %w", err)}
	}
	if mode == KafkaHandshake {
		return Observation{}
	}
	meta := kmsg.NewPtrMetadataRequest()
	meta.Topics = []kmsg.MetadataRequestTopic{} // none: brokers only (nil would mean all topics)
	version := int16(-1)
	for _, k := range apiVersions.ApiKeys {
		if k.ApiKey == meta.Key() {
			version = min(k.MaxVersion, meta.MaxVersion())
		}
	}
	if version < 0 {
		return Observation{Err: errors.New("kafka: the broker does not serve Metadata requests")}
	}
	meta.SetVersion(version)
	resp, err = roundTrip(conn, meta, 2)
	if err != nil {
		return Observation{Err: fmt.Errorf("kafka Metadata v%d: %w", version, requestError(ctx, err))}
	}
	var advertised []string
	for _, b := range resp.(*kmsg.MetadataResponse).Brokers {
		advertised = append(advertised, net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))))
	}
	return Observation{Advertised: advertised}
}

// roundTrip writes req (header v1, or v2 when flexible) and reads its response.
func roundTrip(conn net.Conn, req kmsg.Request, correlationID int32) (kmsg.Response, error) {
	msg := kmsg.NewRequestFormatter(kmsg.FormatterClientID("brokerport-probe")).AppendRequest(nil, req, correlationID)
	if _, err := conn.Write(msg); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		return nil, err
	}
	n := int32(binary.BigEndian.Uint32(size[:]))
	if n < 4 || n > maxResponse {
		return nil, errNotKafka
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(conn, body); err != nil {
		return nil, err
	}
	if got := int32(binary.BigEndian.Uint32(body)); got != correlationID {
		return nil, errNotKafka
	}
	body = body[4:]
	resp := req.ResponseKind()
	// Flexible responses carry tagged fields after the correlation ID, except ApiVersions',
	// whose header stays v0 so that any client can read it.
	if resp.IsFlexible() && req.Key() != kmsg.ApiVersions.Int16() {
		var err error
		if body, err = skipTags(body); err != nil {
			return nil, errNotKafka
		}
	}
	if err := resp.ReadFrom(body); err != nil {
		return nil, errNotKafka
	}
	return resp, nil
}

// skipTags skips a tagged-field section: a count, then (tag, size, bytes) each, as uvarints.
func skipTags(b []byte) ([]byte, error) {
	count, n := binary.Uvarint(b)
	if n <= 0 {
		return nil, errors.New("malformed response header")
	}
	b = b[n:]
	for range count {
		if _, n = binary.Uvarint(b); n <= 0 {
			return nil, errors.New("malformed response header")
		}
		b = b[n:]
		size, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < size {
			return nil, errors.New("malformed response header")
		}
		b = b[n+int(size):]
	}
	return b, nil
}

// connectError says briefly why a connection failed; the address is said by whoever reports it.
func connectError(err error) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return errors.New("connection refused")
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return errors.New("no route to host")
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return errors.New("connect timed out")
	}
	return err
}

func requestError(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil, isTimeout(err):
		return errors.New("no answer in time")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return errors.New("connection closed by the listener")
	}
	return err
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
