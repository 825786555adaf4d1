package graph

import (
	"slices"
	"testing"
)

// TestWidgetSlotsCustomWidget checks that a socket-typed input its node validates itself
// (WebcamCapture's WEBCAM, a DOM widget in the front end whose value is saved in
// widgets_values) takes a widget slot, so the widgets after it keep their values.
func TestWidgetSlotsCustomWidget(t *testing.T) {
	s := &Schema{Name: "WebcamCapture", Inputs: []Input{
		{Name: "image", Type: "WEBCAM", CustomValidation: true},
		{Name: "width", Type: TypeInt, Default: 0},
		{Name: "height", Type: TypeInt, Default: 0},
		{Name: "capture_on_queue", Type: TypeBoolean, Default: true},
		{Name: "pic", Type: "IMAGE"},
	}}
	var names []string
	for _, ws := range widgetSlots(s) {
		names = append(names, ws.name)
	}
	if want := []string{"image", "width", "height", "capture_on_queue"}; !slices.Equal(names, want) {
		t.Fatalf("widget slots %v, want %v", names, want)
	}
}
