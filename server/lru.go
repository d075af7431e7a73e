package server

import (
	"container/list"
	"sync"
	"time"
)

// lru is a map bounded by a total cost (each entry's cost, 1 for a plain count), whose
// least recently used entries go first, and whose entries expire ttl after they were added.
// It is safe for concurrent use.
type lru[K comparable, V any] struct {
	maxCost int
	ttl     time.Duration
	now     func() time.Time

	mu    sync.Mutex
	cost  int
	order *list.List // front: most recently used
	items map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key   K
	val   V
	cost  int
	added time.Time
}

func newLRU[K comparable, V any](maxCost int, ttl time.Duration, now func() time.Time) *lru[K, V] {
	if now == nil {
		now = time.Now
	}
	return &lru[K, V]{maxCost: maxCost, ttl: ttl, now: now, order: list.New(), items: map[K]*list.Element{}}
}

// get returns the value of key unless it is absent or expired.
func (l *lru[K, V]) get(key K) (V, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.getLocked(key)
}

func (l *lru[K, V]) getLocked(key K) (V, bool) {
	var zero V
	el, ok := l.items[key]
	if !ok {
		return zero, false
	}
	e := el.Value.(*lruEntry[K, V])
	if l.ttl > 0 && l.now().Sub(e.added) >= l.ttl {
		l.removeLocked(el)
		return zero, false
	}
	l.order.MoveToFront(el)
	return e.val, true
}

// add sets key to val, then drops least recently used entries until the total cost fits.
// An entry costing more than the whole budget is not kept.
func (l *lru[K, V]) add(key K, val V, cost int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addLocked(key, val, cost)
}

func (l *lru[K, V]) addLocked(key K, val V, cost int) {
	if el, ok := l.items[key]; ok {
		l.removeLocked(el)
	}
	if cost > l.maxCost {
		return
	}
	l.items[key] = l.order.PushFront(&lruEntry[K, V]{key: key, val: val, cost: cost, added: l.now()})
	l.cost += cost
	for l.cost > l.maxCost {
		l.removeLocked(l.order.Back())
	}
}

// getOrAdd returns the value of key, adding the one made by create (costing 1) when absent
// or expired.
func (l *lru[K, V]) getOrAdd(key K, create func() V) V {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v, ok := l.getLocked(key); ok {
		return v
	}
	v := create()
	l.addLocked(key, v, 1)
	return v
}

func (l *lru[K, V]) removeLocked(el *list.Element) {
	e := el.Value.(*lruEntry[K, V])
	l.order.Remove(el)
	delete(l.items, e.key)
	l.cost -= e.cost
}

// len returns the number of entries, expired ones included.
func (l *lru[K, V]) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.items)
}
