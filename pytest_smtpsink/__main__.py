from pytest_smtpsink._cli import main

raise SystemExit(main())
