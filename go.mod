module github.com/forgeflow/forgeflow

go 1.26.0

require (
	github.com/gorilla/websocket v1.5.3
	go.etcd.io/bbolt v1.5.0
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/image v0.48.0
	golang.org/x/sys v0.50.0
	golang.org/x/text v0.44.0
)

require github.com/ebitengine/purego v0.11.3
