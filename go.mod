module github.com/forgeflow/forgeflow

go 1.26.0

require golang.org/x/sys v0.50.0

require (
	github.com/ebitengine/purego v0.11.3 // indirect
	github.com/goccy/go-json v0.12.0 // indirect
	github.com/gorilla/websocket v1.5.3 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	go.yaml.in/yaml/v3 v3.0.6 // indirect
	golang.org/x/image v0.48.0 // indirect
	golang.org/x/text v0.44.0 // indirect
)
