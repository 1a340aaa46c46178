"""The model lifecycle in MLflow: training runs tracked (`tracking`), certified bundles registered as versions and
moved between aliases (`registry`), registered versions fetched for scoring by `models:/NAME@ALIAS` (`fetch`),
and shadow comparisons of a challenger with the serving model recorded for `toolchain models compare`
(`shadow`). `refs` parses model references and imports nothing heavy; `client` is the one place that talks to
MLflow (imported only when a command needs it, so a scoring install that never names a registered model never
loads MLflow)."""
