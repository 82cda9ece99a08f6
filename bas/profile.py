"""`python -m bas.profile`: the BRAID profiler's command line (its code is bas.braid.profile)."""

from bas.braid.profile import main

if __name__ == "__main__":
    raise SystemExit(main())
