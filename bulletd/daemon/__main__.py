from bulletd.daemon.main import main

raise SystemExit(main())
