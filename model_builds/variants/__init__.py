"""Stage `variants`: one folder per enabled variant under artifacts/variants/, each with a variant.json
(the record type is infopt.manifest.VariantBuild). The builders live in one module per kind and `build.py`
dispatches on `variant.kind`; `record.py` writes and reads variant.json.
"""
