from hba_sweep.cli import main

raise SystemExit(main())
