package check

import "fmt"

// Recheck is a reader's second read, at the end of its work under a read
// lock: the state must be the one its first read saw (no writer wrote in
// between) and whole (the set has one element per increment). It reports
// false, checking nothing, if the token is stale (fenced) or the client
// read nothing before.
func (r *Resource) Recheck(client int, token uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	first, ok := r.last[client]
	if !ok || first.token != token || (r.fenced && token < r.maxTok) {
		r.refused++
		return false
	}
	r.maxTok = max(r.maxTok, token)
	r.rechecks++
	if r.counter != first.counter || len(r.set) != r.counter {
		r.torn = append(r.torn, fmt.Sprintf("c%d (token %d) read counter %d and %d elements, then counter %d and %d elements under the same read lock",
			client, token, first.counter, first.n, r.counter, len(r.set)))
	}
	return true
}

// SetLimit makes the resource a semaphore's: at most n holders may be in
// it at once.
func (r *Resource) SetLimit(n int) {
	r.mu.Lock()
	r.limit = n
	r.mu.Unlock()
}

// Enter registers a permit holder. Fenced, the resource refuses a holder
// beyond its limit (one of those in must be stale); unfenced, it lets it in
// and notes the damage.
func (r *Resource) Enter(client int, token uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fenced && len(r.in) >= r.limit {
		r.enterRef++
		return false
	}
	r.enters++
	r.in[token] = client
	r.maxIn = max(r.maxIn, len(r.in))
	if len(r.in) > r.limit {
		r.overfull = append(r.overfull, fmt.Sprintf("c%d (token %d) entered as holder %d of %d permits", client, token, len(r.in), r.limit))
	}
	return true
}

// Leave unregisters a permit holder.
func (r *Resource) Leave(token uint64) {
	r.mu.Lock()
	delete(r.in, token)
	r.mu.Unlock()
}

// Evict unregisters a killed client's permits, as a server would on the
// client's connection closing.
func (r *Resource) Evict(client int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for tok, c := range r.in {
		if c == client {
			delete(r.in, tok)
		}
	}
}

// sharedState is what Check reads of the readers' and holders' records.
type sharedState struct {
	rechecks, enters, enterRef, maxIn int
	torn, overfull                    []string
}

func (r *Resource) sharedState() sharedState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return sharedState{r.rechecks, r.enters, r.enterRef, r.maxIn, append([]string(nil), r.torn...), append([]string(nil), r.overfull...)}
}
