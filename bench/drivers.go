package bench

// The dlock drivers' adapters; each returns nothing until its package lands.

func dlockFile(e *Engines) []Contender    { return nil }
func dlockRedis(e *Engines) []Contender   { return nil }
func dlockRedlock(e *Engines) []Contender { return nil }
func dlockEtcd(e *Engines) []Contender    { return nil }
func dlockZK(e *Engines) []Contender      { return nil }
