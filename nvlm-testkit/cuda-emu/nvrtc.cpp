// An emulated NVRTC (libnvrtc.so) for the CUDA emulator: "compiles" a kernel program with the host C++ compiler
// ($CXX, else c++) into a shared object the emulated driver loads. The program is preprocessed with the emulator's
// device-language header (emu_kernel.h, also behind <cuda_bf16.h>), every `__global__` function found, and a
// launch entry `__emu_launch_<name>(void** params)` appended for each. The "cubin" is "NVLMEMU1", the object's
// length (u64), the object. The version reported (99.0) keeps these images apart from real cubins in caches.

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

typedef int nvrtcResult;
enum : nvrtcResult {
    NVRTC_SUCCESS = 0,
    NVRTC_ERROR_INVALID_INPUT = 3,
    NVRTC_ERROR_INVALID_PROGRAM = 4,
    NVRTC_ERROR_COMPILATION = 6,
    NVRTC_ERROR_INTERNAL_ERROR = 11,
};

extern char** environ;

namespace {

struct Program {
    std::string source;
    std::string name;
    std::string log;
    std::string image;
};

std::string library_dir() {
    Dl_info info{};
    dladdr(reinterpret_cast<void*>(&library_dir), &info);
    std::string path = info.dli_fname ? info.dli_fname : "";
    const auto slash = path.rfind('/');
    return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// Runs `args` (no shell, spawned without running any code in the child: the caller may have other threads), its
// output appended to `log`. Returns whether it exited 0.
bool run(const std::vector<std::string>& args, const std::string& dir, std::string& log) {
    const std::string out = dir + "/compiler.log";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 2, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 2, 1);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = 0;
    const int spawned = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) {
        log += "cuda-emu NVRTC: could not start " + args[0] + ": " + strerror(spawned) + "\n";
        return false;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    log += read_file(out);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// The names of the `__global__` functions in preprocessed text (the header spells __global__ as this attribute).
std::vector<std::string> kernel_names(const std::string& text) {
    static const std::string marker = "__attribute__((visibility(\"default\"), used))";
    std::vector<std::string> names;
    for (std::size_t at = text.find(marker); at != std::string::npos; at = text.find(marker, at + 1)) {
        std::size_t i = at + marker.size();
        auto skip_space = [&] { while (i < text.size() && isspace((unsigned char)text[i])) ++i; };
        skip_space();
        if (text.compare(i, 4, "void") != 0) continue;
        i += 4;
        skip_space();
        const std::size_t start = i;
        while (i < text.size() && (isalnum((unsigned char)text[i]) || text[i] == '_')) ++i;
        if (i > start) names.push_back(text.substr(start, i - start));
    }
    return names;
}

nvrtcResult compile(Program& p) {
    char dir_template[] = "/tmp/cuda-emu-nvrtc-XXXXXX";
    if (!mkdtemp(dir_template)) return NVRTC_ERROR_INTERNAL_ERROR;
    const std::string dir = dir_template, lib = library_dir();
    const char* cxx_env = getenv("CXX");
    const std::string cxx = cxx_env && *cxx_env ? cxx_env : "c++";
    {
        std::ofstream(dir + "/kernel.cu") << p.source;
    }
    bool ok = run({cxx, "-x", "c++", "-std=c++17", "-E", "-P", "-I" + lib + "/include", "-include",
                   lib + "/emu_kernel.h", dir + "/kernel.cu", "-o", dir + "/kernel.ii"},
                  dir, p.log);
    if (ok) {
        std::string text = read_file(dir + "/kernel.ii");
        text += "\n// launch entries added by the emulated NVRTC\n";
        for (const auto& name : kernel_names(text)) {
            text += "extern \"C\" void __emu_launch_" + name + "(void** p) { __emu_invoke(" + name + ", p); }\n";
            text += "extern \"C\" int __emu_sizes_" + name + "(unsigned* s) { return __emu_param_sizes(" + name +
                    ", s); }\n";
        }
        std::ofstream(dir + "/module.cpp") << text;
        ok = run({cxx, "-x", "c++", "-std=c++17", "-O2", "-fno-strict-aliasing", "-fPIC", "-shared", "-w", "-I" + lib,
                  dir + "/module.cpp", "-o", dir + "/module.so"},
                 dir, p.log);
    }
    if (ok) {
        const std::string so = read_file(dir + "/module.so");
        const std::uint64_t len = so.size();
        p.image.assign("NVLMEMU1", 8);
        p.image.append(reinterpret_cast<const char*>(&len), 8);
        p.image += so;
    }
    for (const char* f : {"kernel.cu", "kernel.ii", "module.cpp", "module.so", "compiler.log"})
        unlink((dir + "/" + f).c_str());
    rmdir(dir.c_str());
    return ok ? NVRTC_SUCCESS : NVRTC_ERROR_COMPILATION;
}

}  // namespace

extern "C" {

nvrtcResult nvrtcVersion(int* major, int* minor) {
    *major = 99;
    *minor = 0;
    return NVRTC_SUCCESS;
}
const char* nvrtcGetErrorString(nvrtcResult r) {
    switch (r) {
        case NVRTC_SUCCESS: return "NVRTC_SUCCESS";
        case NVRTC_ERROR_COMPILATION: return "NVRTC_ERROR_COMPILATION";
        case NVRTC_ERROR_INVALID_INPUT: return "NVRTC_ERROR_INVALID_INPUT";
        default: return "NVRTC_ERROR_INTERNAL_ERROR";
    }
}
nvrtcResult nvrtcCreateProgram(void** prog, const char* src, const char* name, int, const char* const*,
                               const char* const*) {
    if (!prog || !src) return NVRTC_ERROR_INVALID_INPUT;
    *prog = new Program{src, name ? name : "program", "", ""};
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcDestroyProgram(void** prog) {
    if (!prog) return NVRTC_ERROR_INVALID_PROGRAM;
    delete static_cast<Program*>(*prog);
    *prog = nullptr;
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcCompileProgram(void* prog, int, const char* const*) {
    if (!prog) return NVRTC_ERROR_INVALID_PROGRAM;
    return compile(*static_cast<Program*>(prog));
}
nvrtcResult nvrtcGetProgramLogSize(void* prog, std::size_t* size) {
    *size = static_cast<Program*>(prog)->log.size() + 1;
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetProgramLog(void* prog, char* log) {
    const auto& l = static_cast<Program*>(prog)->log;
    memcpy(log, l.c_str(), l.size() + 1);
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetCUBINSize(void* prog, std::size_t* size) {
    *size = static_cast<Program*>(prog)->image.size();
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetCUBIN(void* prog, char* cubin) {
    const auto& image = static_cast<Program*>(prog)->image;
    memcpy(cubin, image.data(), image.size());
    return NVRTC_SUCCESS;
}

}  // extern "C"
