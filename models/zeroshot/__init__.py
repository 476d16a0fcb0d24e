"""The training-free zero-shot method: CLAP audio tagging, text-conditioned box detection, SAM masks, fusion."""
