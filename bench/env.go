package bench

import (
	"os"
	"strings"
)

func addrsFromEnv(name, def string) []string {
	v := os.Getenv(name)
	if v == "" {
		v = def
	}
	return strings.Split(v, ",")
}
