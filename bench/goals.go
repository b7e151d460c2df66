package bench

import "strings"

func (r *Report) goals(b *strings.Builder) {}
