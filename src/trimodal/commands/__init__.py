"""One module per `trimodal` subcommand: its arguments (`add_parser`) and what it runs (`run`).

These are the application layer: a command may import any subpackage (the `sample` command
joins mdm_core with the tokenizers, `vocab` joins packing with them, which neither library
package may do itself). Nothing but `trimodal.cli` imports a command, and a command raises
`trimodal.errors.UserError` for a user's mistake instead of printing it: `cli.main` turns it
into the one-line message. Heavy imports (torch, codecs) happen inside `run`, so that
`trimodal --help` stays fast.
"""
