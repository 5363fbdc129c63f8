package main

import "fmt"

// config is one point of the matrix: the load smtp-source puts on a target.
type config struct {
	size     int // bytes of payload per message (smtp-source -l)
	sessions int // parallel SMTP sessions (smtp-source -s)
	rcpts    int // recipients per message (smtp-source -r)
	n        int // messages in the measured run (smtp-source -m)
}

func (c config) String() string {
	return fmt.Sprintf("%s s=%d r=%d n=%d", sizeLabel(c.size), c.sessions, c.rcpts, c.n)
}

// matrix lists the configurations in report order: by size, then sessions,
// then recipients.
func (o options) matrix() []config {
	var out []config
	for _, size := range o.sizes {
		for _, s := range o.sessions {
			for _, r := range o.rcpts {
				n := o.n
				if n == 0 {
					n = defaultN(size, s)
				}
				out = append(out, config{size: size, sessions: s, rcpts: r, n: n})
			}
		}
	}
	return out
}

// defaultN is the number of messages per run when -n is not given: enough
// for a few seconds of Postfix (bound by one fsync per message); slower
// peers get fewer (runSize). 500 per session, between 500 and 5000; a
// quarter of that for messages above 16 KiB.
func defaultN(size, sessions int) int {
	n := min(max(500*sessions, 500), 5000)
	if size > 16<<10 {
		n /= 4
	}
	return n
}

// sizeLabel writes 1024 as "1 KiB" and 65536 as "64 KiB"; other sizes in bytes.
func sizeLabel(size int) string {
	if size >= 1024 && size%1024 == 0 {
		return fmt.Sprintf("%d KiB", size/1024)
	}
	return fmt.Sprintf("%d B", size)
}
