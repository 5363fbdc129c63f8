package deliver

import (
	"context"
	"net"
	"testing"
)

// MX hosts of equal preference are tried in random order (RFC 5321 §5.1,
// to spread the load), always before worse preferences.
func TestMXEqualPreferenceRandomised(t *testing.T) {
	res := &fakeResolver{
		mx: map[string][]*net.MX{"d.test": {{Host: "c.test.", Pref: 20}, {Host: "a.test.", Pref: 10}, {Host: "b.test.", Pref: 10}}},
		hosts: map[string][]string{
			"a.test": {"127.0.26.41"}, "b.test": {"127.0.26.42"}, "c.test": {"127.0.26.43"},
		},
	}
	d := &Deliverer{Resolver: res}
	first := map[string]int{}
	for range 200 {
		ts, err := d.mxTargets(context.Background(), "d.test", 25, true)
		if err != nil {
			t.Fatal(err)
		}
		if len(ts) != 3 || ts[2].name != "c.test" {
			t.Fatalf("targets %+v: the preference-20 host must come last", ts)
		}
		if ts[0].policy == nil || ts[0].policy.label() != "none" {
			t.Fatalf("an MX host without MTA-STS or DANE has policy %+v, want none", ts[0].policy)
		}
		first[ts[0].name]++
	}
	// Each of the two comes first about half the time; 200 draws put
	// either below 60 with a probability under 1e-8.
	if first["a.test"] < 60 || first["b.test"] < 60 {
		t.Errorf("first choices %v: equal preferences are not shuffled", first)
	}
}
