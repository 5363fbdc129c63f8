package spool

import (
	"testing"
	"time"
)

func TestPolicyCache(t *testing.T) {
	s := openTest(t, time.Now)
	if b, err := s.LoadPolicy("a.test"); err != nil || b != nil {
		t.Fatalf("nothing cached: %q, %v", b, err)
	}
	if err := s.StorePolicy("a.test", []byte(`{"mode":"enforce"}`), time.Hour); err != nil {
		t.Fatal(err)
	}
	if b, err := s.LoadPolicy("a.test"); err != nil || string(b) != `{"mode":"enforce"}` {
		t.Fatalf("cached: %q, %v", b, err)
	}
	if err := s.StorePolicy("a/b", nil, time.Hour); err == nil {
		t.Error("a domain with a slash was accepted")
	}
}
