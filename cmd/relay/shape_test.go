package main

import (
	"bytes"
	"testing"

	"github.com/relay-mta/relay/relay/admin/api"
)

// TestWriteShape: the table of relay queue shape, as qshape lays it out.
func TestWriteShape(t *testing.T) {
	sh := &api.Shape{By: "domain", Buckets: api.ShapeLabels(),
		Total: api.ShapeRow{Destination: "TOTAL", Total: 5, Counts: []int{2, 2, 0, 0, 0, 0, 0, 1}},
		Rows: []api.ShapeRow{
			{Destination: "c.test", Total: 4, Counts: []int{2, 1, 0, 0, 0, 0, 0, 1}},
			{Destination: "example.org", Total: 1, Counts: []int{0, 1, 0, 0, 0, 0, 0, 0}},
		}}
	var b bytes.Buffer
	writeShape(&b, sh)
	want := "" +
		"DOMAIN             T     0-5m    5-10m   10-20m   20-40m   40-80m  80-160m 160-320m    320m+\n" +
		"TOTAL              5        2        2        0        0        0        0        0        1\n" +
		"c.test             4        2        1        0        0        0        0        0        1\n" +
		"example.org        1        0        1        0        0        0        0        0        0\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
