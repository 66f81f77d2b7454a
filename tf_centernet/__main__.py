from tf_centernet.cli import main

raise SystemExit(main())
