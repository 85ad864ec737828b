"""The sandbox's stand-in CRD for the Gateway API's HTTPRoute (package data; not a "crds/" folder, so
that the search for the product's crds/ above the package never mistakes it for them)."""
