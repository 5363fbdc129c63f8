package spool

import (
	"errors"
	"fmt"
	"strings"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// The MTA-STS policy cache (RFC 8461 §5.1): p/<domain> holds the policy
// of a recipient domain as package mtasts encodes it, with a Badger TTL of
// the policy's max_age, so that it outlives restarts and vanishes by
// itself. The spool neither reads nor checks it.

const prefixPolicy = "p/"

// LoadPolicy returns the cached MTA-STS policy of domain, nil when there
// is none (or it expired).
func (s *Spool) LoadPolicy(domain string) ([]byte, error) {
	if err := checkPolicyDomain(domain); err != nil {
		return nil, fmt.Errorf("spool: load policy: %w", err)
	}
	if err := s.begin(); err != nil {
		return nil, fmt.Errorf("spool: load policy of %s: %w", domain, err)
	}
	defer s.end()
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(prefixPolicy + domain))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("spool: load policy of %s: %w", domain, err)
	}
	return out, nil
}

// StorePolicy caches domain's MTA-STS policy for ttl. It is not synced
// at once: a policy lost in a crash is fetched again.
func (s *Spool) StorePolicy(domain string, value []byte, ttl time.Duration) error {
	if err := checkPolicyDomain(domain); err != nil {
		return fmt.Errorf("spool: store policy: %w", err)
	}
	if err := s.begin(); err != nil {
		return fmt.Errorf("spool: store policy of %s: %w", domain, err)
	}
	defer s.end()
	if err := s.brokenErr(); err != nil {
		return fmt.Errorf("spool: store policy of %s: %w", domain, err)
	}
	s.writeGate.RLock()
	defer s.writeGate.RUnlock()
	err := s.update(func(txn *wtxn) error {
		return txn.SetEntry(badger.NewEntry([]byte(prefixPolicy+domain), value).WithTTL(ttl))
	})
	if err != nil {
		return fmt.Errorf("spool: store policy of %s: %w", domain, err)
	}
	return nil
}

func checkPolicyDomain(d string) error {
	if d == "" || len(d) > 255 || strings.ContainsAny(d, "/\x00") {
		return fmt.Errorf("bad domain %q", d)
	}
	return nil
}
