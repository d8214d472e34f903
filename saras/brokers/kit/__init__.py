"""What every broker kit needs once: the resend loop, the rate limiter, the market clock."""
