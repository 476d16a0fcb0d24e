"""The OV-AVSS network, one concept per file (see README "Code map")."""
