"""`make bench`: speed and scale of `qa` against the physical floor and a peer, as JSON."""
