from xllm_tui.cli import main

raise SystemExit(main())
