// Package manifests holds brokerport's install manifests (kustomize: base, and the default and
// standalone overlays) and builds them with the kustomize library, so that tests and the
// end-to-end suite apply exactly what `kubectl apply -k` would.
package manifests

import (
	"embed"
	"fmt"
	"io/fs"
	"path"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

//go:embed base default standalone
var files embed.FS

// Build renders an overlay ("default" or "standalone"), with extra kustomize patches applied on
// top (each a kustomization `patches` entry, as YAML), to a multi-document YAML stream.
func Build(overlay string, extraPatches ...string) ([]byte, error) {
	fsys := filesys.MakeFsInMemory()
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		return fsys.WriteFile(path.Join("/", p), data)
	})
	if err != nil {
		return nil, fmt.Errorf("copying the manifests: %w", err)
	}
	dir := "/" + overlay
	if len(extraPatches) > 0 {
		kustomization := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../" + overlay + "\npatches:\n"
		for _, p := range extraPatches {
			kustomization += p
		}
		dir = "/with-patches"
		if err := fsys.WriteFile(dir+"/kustomization.yaml", []byte(kustomization)); err != nil {
			return nil, err
		}
	}
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("building %s: %w", overlay, err)
	}
	return resources.AsYaml()
}
