"""Jobs that run over whole datasets or videos (prepare, train, evaluate, annotate).

Each job is a plain function taking its options and a `models.progress.Progress`; it writes its outputs
atomically and raises `models.errors.AVSegError` for anything the user can fix. Nothing is imported here,
so importing one job does not pull in the others (e.g. `prepare` never imports torch).
"""
