package store

import (
	"context"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// memberGate lets an embedded member's client requests in until the member
// stops. StopMember stops raft and the backend before the client
// listeners (a graceful stop would wait for other hosts' streams), and with
// the store roles enforced etcd reads the user from the backend to check
// each request: one arriving after the backend closed crashed the agent
// (a nil bbolt transaction in a watch's permission check). The gate closes
// first: later requests and stream messages are refused as the member
// being unavailable (clients go to another member), and the requests
// already in (unary ones) are waited for, briefly.
type memberGate struct {
	mu     sync.Mutex
	closed bool
	active int
	idle   chan struct{} // closed when the last active request leaves after close
	done   chan struct{} // closed by close: ends the streams in progress
}

// EmbeddedMember is this host's running embedded etcd member, as
// StartEmbedded started it, with its gate: the Store it is handed to
// (Connect, RestartMember) closes the gate first when it stops the member.
type EmbeddedMember struct {
	*embed.Etcd
	gate *memberGate
}

var errMemberStopping = status.Error(codes.Unavailable, "store member stopping")

func (g *memberGate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.active++
	return true
}

func (g *memberGate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.active--
	if g.active == 0 && g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
}

// close refuses what comes next and waits up to wait for what is in.
func (g *memberGate) close(wait time.Duration) {
	g.mu.Lock()
	if !g.closed {
		close(g.done)
	}
	g.closed = true
	if g.active == 0 {
		g.mu.Unlock()
		return
	}
	if g.idle == nil {
		g.idle = make(chan struct{})
	}
	idle := g.idle
	g.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	}
}

func (g *memberGate) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !g.enter() {
		return nil, errMemberStopping
	}
	defer g.leave()
	return handler(ctx, req)
}

func (g *memberGate) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !g.enter() {
		return errMemberStopping
	}
	g.leave()
	// The stream ends when the gate closes: etcd's watch and lease
	// keepalive handlers return when their stream's context is done, and
	// the member's listeners then close at once instead of waiting out
	// etcd's request timeout (7 s) for other hosts' streams. Their
	// clients open them again on another member.
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	go func() {
		select {
		case <-g.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := handler(srv, gatedStream{ss, g, ctx})
	if g.isClosed() {
		// Unavailable, which clients take as "try another member" (the
		// handler's own error would be "canceled", which ends a watch).
		return errMemberStopping
	}
	return err
}

func (g *memberGate) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// gatedStream refuses the messages a stream receives once the gate is
// closed (a watch's creation checks permissions), and its context ends
// when the gate closes.
type gatedStream struct {
	grpc.ServerStream
	g   *memberGate
	ctx context.Context
}

func (s gatedStream) Context() context.Context { return s.ctx }

func (s gatedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if s.g.isClosed() {
		return errMemberStopping
	}
	return nil
}

// gateOptions makes a member's gate and the gRPC options that apply it.
func gateOptions() (*memberGate, []grpc.ServerOption) {
	g := &memberGate{done: make(chan struct{})}
	return g, []grpc.ServerOption{grpc.ChainUnaryInterceptor(g.unary), grpc.ChainStreamInterceptor(g.stream)}
}

// closeGate closes the member's gate (StartEmbedded made it), refusing
// what comes next and waiting up to wait for the requests in progress.
func (m *EmbeddedMember) closeGate(wait time.Duration) {
	if m.gate != nil {
		m.gate.close(wait)
	}
}
