from gpuconv.cli import main

raise SystemExit(main())
