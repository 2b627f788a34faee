"""`python -m tb_cnnviz`: the `tb-cnnviz` command, for environments without its script on PATH."""

from tb_cnnviz.cli import main

raise SystemExit(main())
