"""The appliance as a person runs it: `llmbasedos up/status/down/validate`, the program list, the supervisord
configuration, `token`/`licence`/`audit` administration and `prepare-models`.

    cli.py                the `llmbasedos` command: up, status, down, validate, and the subcommands' dispatch
    lifecycle.py          starting supervisord, waiting for the programs, stopping them all
    processes.py ports.py state_dir.py  pids and signals, ports, the state directory and its lock
    supervisor_client.py  supervisord's XML-RPC over its UNIX socket
    cli_errors.py         CLIError, the one error a command reports and exits on
    programs.py           the programs that make up the appliance, declared once as data
    supervisor_config.py  supervisord's configuration rendered from that list (pure)
    admin_cli.py          `token`, `licence`, `audit`: the policy's stores, from the command line
    models_cli.py         `prepare-models`

The top layer: it starts everything, so it may import any part of the package; nothing imports it.
"""
