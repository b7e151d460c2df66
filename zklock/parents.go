package zklock

import (
	"sync"
	"sync/atomic"
)

// What the driver remembers of lock parents, so that a create goes out in
// the order most likely to succeed at once and the queue listing is sent
// only where it is likely needed. It is a guess only: every outcome is
// checked by the server's answers (a create under a missing parent fails
// with NoNode and is sent again after the parent; a container created twice
// fails with NodeExists, which is ignored), so a wrong guess costs a
// request, never a wrong grant.
//
// Seen at issue 16's scale (10,000 distinct names on one client), before
// the guess: each grant sent a multi that failed (no parent), a create of
// the root (exists), the parent's container, the multi again, the listing
// twice and the own-node stat: 7 requests, 4 of them writes, where the
// floor sends 1.
type parentCache struct {
	mu sync.Mutex
	m  map[string]parentFacts
	// missing leans towards "a parent this driver has not seen is missing"
	// when positive: the outcome of the latest creates under unseen
	// parents, clamped to [-missingClamp, missingClamp]. A client taking
	// many fresh names learns within a few creates to make the parent
	// first; one whose names are old (made by other clients) sends the
	// multi first, as before.
	missing atomic.Int32
}

// parentFacts is what the latest create under a parent showed.
type parentFacts struct {
	// company: other nodes were in the queue when our node joined it; the
	// next create there sends the listing behind it (it will likely be
	// needed), where a queue that was empty is read only if the create's
	// reply shows company.
	company bool
}

const (
	parentsKept  = 1024
	missingClamp = 4
)

// lookup returns what is known of parent; known false if nothing is.
func (p *parentCache) lookup(parent string) (f parentFacts, known bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, known = p.m[parent]
	return f, known
}

// guessMissing reports whether a create under parent should make the
// parent first.
func (p *parentCache) guessMissing(known bool) bool { return !known && p.missing.Load() > 0 }

// wasMissing records whether an unseen parent turned out missing.
func (p *parentCache) wasMissing(missing bool) {
	for {
		v := p.missing.Load()
		n := v - 1
		if missing {
			n = v + 1
		}
		n = max(-missingClamp, min(missingClamp, n))
		if p.missing.CompareAndSwap(v, n) {
			return
		}
	}
}

// saw records that a create under parent succeeded, with company or not.
func (p *parentCache) saw(parent string, f parentFacts) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[string]parentFacts)
	}
	if _, ok := p.m[parent]; !ok && len(p.m) >= parentsKept {
		for k := range p.m { // map order is random: evict any one
			delete(p.m, k)
			break
		}
	}
	p.m[parent] = f
}

// forget drops parent, found missing.
func (p *parentCache) forget(parent string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, parent)
}
