package redislock

const holderEnv = "DLOCK_REDISLOCK_HOLDER"

func holderMain() int { return 0 }
