// Command resolve-env prints the environment the kubelet would give one container of a pod, using
// the kubelet's own code: fieldRef values as podFieldSelectorRuntimeValue resolves them
// (pkg/kubelet/kubelet_pods.go: ConvertDownwardAPIFieldLabel, then spec.* directly and metadata.*
// through pkg/fieldpath), then $(VAR) expansion in declaration order with
// third_party/forked/golang/expansion, as makeEnvironmentVariables does. The end-to-end suite
// uses it to learn what a broker would really advertise.
//
// Usage: resolve-env CONTAINER < pod.json   (prints a JSON list of {"name", "value"})
package main

import (
	"encoding/json"
	"fmt"
	"os"

	v1 "k8s.io/api/core/v1"
	podshelper "k8s.io/kubernetes/pkg/apis/core/pods"
	"k8s.io/kubernetes/pkg/fieldpath"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: resolve-env CONTAINER < pod.json")
		os.Exit(2)
	}
	var pod v1.Pod
	if err := json.NewDecoder(os.Stdin).Decode(&pod); err != nil {
		fail("reading the pod: %v", err)
	}
	var container *v1.Container
	for _, list := range [][]v1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range list {
			if list[i].Name == os.Args[1] {
				container = &list[i]
			}
		}
	}
	if container == nil {
		fail("pod %s has no container %q", pod.Name, os.Args[1])
	}

	type envVar struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	}
	var out []envVar
	tmpEnv := map[string]string{}
	mapping := expansion.MappingFuncFor(tmpEnv)
	for _, e := range container.Env {
		value := e.Value
		if value != "" {
			value = expansion.Expand(value, mapping)
		} else if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			var err error
			if value, err = fieldValue(e.ValueFrom.FieldRef, &pod); err != nil {
				fail("env %s: %v", e.Name, err)
			}
		}
		tmpEnv[e.Name] = value
		out = append(out, envVar{Name: e.Name, Value: value})
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("%v", err)
	}
}

// fieldValue is the kubelet's podFieldSelectorRuntimeValue for the fields a pod spec carries.
func fieldValue(fs *v1.ObjectFieldSelector, pod *v1.Pod) (string, error) {
	version := fs.APIVersion
	if version == "" {
		version = "v1" // the API server's default; a stored pod always has it
	}
	path, _, err := podshelper.ConvertDownwardAPIFieldLabel(version, fs.FieldPath, "")
	if err != nil {
		return "", err
	}
	switch path {
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	}
	return fieldpath.ExtractFieldPathAsString(pod, path)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "resolve-env: "+format+"\n", args...)
	os.Exit(1)
}
