package relay

import "github.com/relay-mta/relay/relay/config"

// minFreeSpace is the reserve of the spool's disk-space guard
// (spool/diskspace): below it new mail gets 452 4.3.1, deliveries go on.
// It is [queue] min_free_space, by default 4 x max_message_size + 64 MiB:
// the 64 MiB cover what the daemon must still write to keep working
// (spool/doc.go, "Disk space"); the rest was the stand-in for bodies in
// flight before the guard counted them, kept as a margin for the
// configurations that rely on the default.
func minFreeSpace(cfg *config.Config) int64 {
	if cfg.Queue.MinFreeSpace != 0 {
		return cfg.Queue.MinFreeSpace
	}
	return 4*cfg.SMTP.MaxMessageSize + 64<<20
}
