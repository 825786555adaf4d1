package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NodeOptions configure an embedded JetStream node (forgeflow nats).
type NodeOptions struct {
	// Name is the server's name in the cluster; empty means "HOST:PORT". Names must
	// differ between the nodes of one cluster.
	Name string
	// StoreDir holds the JetStream data (required).
	StoreDir string
	// Host and Port are where clients connect; Port 0 picks a free one,
	// -1 the NATS default (4222).
	Host string
	Port int
	// ClusterName, ClusterListen ("HOST:PORT") and Routes (nats://HOST:PORT of the
	// other nodes' cluster ports) make the node one of a cluster; all empty runs a
	// single node.
	ClusterName   string
	ClusterListen string
	Routes        []string
	// MaxPayload is the largest message clients may publish; 0 means
	// DefaultMaxPayload. A queued prompt is one message.
	MaxPayload int32
	Logger     *slog.Logger
}

// DefaultMaxPayload is the embedded node's max_payload: prompts carry their UI workflow
// in extra_data (hundreds of KB for large graphs), above NATS's 1 MB default.
const DefaultMaxPayload = 8 << 20

// Node is a running embedded JetStream node.
type Node struct {
	srv *server.Server
}

// StartNode starts an embedded NATS server with JetStream, writing every message to
// disk before it is acknowledged (sync_interval: always: with the default lazy sync
// a node that loses power can lose writes it already acknowledged). It returns once
// the node accepts connections; a clustered node may still be electing its JetStream
// meta leader.
func StartNode(o NodeOptions) (*Node, error) {
	if o.StoreDir == "" {
		return nil, errors.New("cluster: node: no store directory")
	}
	store, err := filepath.Abs(o.StoreDir)
	if err != nil {
		return nil, fmt.Errorf("cluster: node: %w", err)
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	switch {
	case o.Port < 0:
		o.Port = server.DEFAULT_PORT
	case o.Port == 0:
		o.Port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName:   o.Name,
		Host:         o.Host,
		Port:         o.Port,
		JetStream:    true,
		StoreDir:     store,
		SyncAlways:   true,
		SyncInterval: 2 * time.Minute, // with SyncAlways every write is synced; this is the flush of idle blocks
		MaxPayload:   o.MaxPayload,
		NoSigs:       true,
	}
	if o.ClusterName != "" || o.ClusterListen != "" || len(o.Routes) > 0 {
		if o.ClusterName == "" || o.ClusterListen == "" {
			return nil, errors.New("cluster: node: --cluster-name and --cluster-listen go together")
		}
		host, port, err := net.SplitHostPort(o.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("cluster: node: cluster listen address %q: %w", o.ClusterListen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("cluster: node: cluster listen address %q: bad port", o.ClusterListen)
		}
		opts.Cluster = server.ClusterOpts{Name: o.ClusterName, Host: host, Port: p}
		for _, r := range o.Routes {
			u, err := url.Parse(strings.TrimSpace(r))
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("cluster: node: route %q: want nats://HOST:PORT", r)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	if opts.ServerName == "" {
		opts.ServerName = net.JoinHostPort(o.Host, strconv.Itoa(o.Port))
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("cluster: node: %w", err)
	}
	if o.Logger != nil {
		srv.SetLoggerV2(&natsLogger{log: o.Logger}, false, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("cluster: node: not ready for connections after 30s")
	}
	return &Node{srv: srv}, nil
}

// ClientURL is the nats:// URL clients connect to.
func (n *Node) ClientURL() string { return n.srv.ClientURL() }

// Name is the node's server name.
func (n *Node) Name() string { return n.srv.Name() }

// IsMetaLeader reports whether this node is the JetStream meta leader of its cluster.
func (n *Node) IsMetaLeader() bool { return n.srv.JetStreamIsLeader() }

// Shutdown stops the node; it is safe to call more than once.
func (n *Node) Shutdown() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

// Wait blocks until the node has shut down.
func (n *Node) Wait() { n.srv.WaitForShutdown() }

// natsLogger writes the server's log through slog.
type natsLogger struct{ log *slog.Logger }

func (l *natsLogger) Noticef(format string, v ...any) { l.log.Info(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
