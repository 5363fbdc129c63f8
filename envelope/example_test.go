package envelope_test

import (
	"fmt"

	"github.com/relay-mta/relay/envelope"
)

// A server splits the argument of MAIL FROM, parses the parameters first
// (SMTPUTF8 decides whether the path may be UTF-8), then the path.
func ExampleSplitArg() {
	path, params, err := envelope.SplitArg(` <"john doe"@example.com> SIZE=1024 SMTPUTF8`)
	if err != nil {
		panic(err)
	}
	mp, err := envelope.ParseMailParams(params)
	if err != nil {
		panic(err)
	}
	p, err := envelope.ParseReversePath(path, mp.SMTPUTF8)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%q %q%s\n", p.Local, p.Domain, mp)
	// Output: "john doe" "example.com" SIZE=1024 SMTPUTF8
}

// Following a source route at relay b.test: strip our own name, forward to
// the next hop.
func ExamplePath_StripFirstHop() {
	p, _ := envelope.ParseForwardPath("<@b.test,@c.test:user@d.test>", false)
	if p.NextHop() == "b.test" {
		p = p.StripFirstHop()
	}
	fmt.Println(p, p.NextHop())
	// Output: <@c.test:user@d.test> c.test
}

func ExamplePath_PercentHack() {
	p, _ := envelope.ParseForwardPath("<user%d.test@b.test>", false)
	q, ok := p.PercentHack()
	fmt.Println(q, ok)
	// Output: <@b.test:user@d.test> true
}
