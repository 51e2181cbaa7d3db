# Obtains the pinned llama.cpp tree and applies loopcpp's patch to it.
#
# The source is the `vendor/llama.cpp` of the llama-cpp-python sdist (same llama.cpp as the
# Python bindings users may already have, so both load the same ABI). The sdist is fetched with
# pip, checked by sha256 and cached outside the build tree; LOOPCPP_LLAMA_SOURCE points at a
# local sdist or llama.cpp tree instead for offline builds.
#
# Result: LOOPCPP_LLAMA_DIR, a patched tree inside the build directory. It is rewritten only
# with files whose content changed, so a patch edit recompiles only what it touches.

set(LOOPCPP_SDIST_NAME   "llama_cpp_python-${LOOPCPP_LLAMA_CPP_PYTHON_VERSION}")
set(LOOPCPP_SDIST_FILE   "${LOOPCPP_SDIST_NAME}.tar.gz")

# The cache directory and the way to run pip are decided by loopcpp/_cachedir.py (standard
# library only), so the build and the Python package never disagree.
function(loopcpp_cachedir_query out)
    execute_process(COMMAND "${Python_EXECUTABLE}" "${PROJECT_SOURCE_DIR}/loopcpp/_cachedir.py" ${ARGN}
                    RESULT_VARIABLE rc OUTPUT_VARIABLE answer ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "loopcpp: ${err}")
    endif()
    string(REPLACE "\n" ";" answer "${answer}")
    set(${out} "${answer}" PARENT_SCOPE)
endfunction()

function(loopcpp_default_cache_dir out)
    loopcpp_cachedir_query(dir)
    file(TO_CMAKE_PATH "${dir}" dir)
    set(${out} "${dir}" PARENT_SCOPE)
endfunction()

function(loopcpp_check_sha256 file)
    file(SHA256 "${file}" actual)
    if(NOT actual STREQUAL LOOPCPP_LLAMA_SDIST_SHA256)
        message(FATAL_ERROR
            "loopcpp: ${file} has sha256 ${actual}, expected ${LOOPCPP_LLAMA_SDIST_SHA256}. "
            "Delete it and build again to re-download it.")
    endif()
endfunction()

# Whether `dest` exists and its stamp file records `key` (what it was made from).
function(loopcpp_is_current dest key out)
    set(${out} FALSE PARENT_SCOPE)
    if(EXISTS "${dest}.stamp" AND IS_DIRECTORY "${dest}")
        file(READ "${dest}.stamp" old)
        if(old STREQUAL key)
            set(${out} TRUE PARENT_SCOPE)
        endif()
    endif()
endfunction()

# Returns the path of a verified sdist, downloading it into the cache when missing.
function(loopcpp_fetch_sdist out)
    loopcpp_default_cache_dir(cache)
    set(sdist "${cache}/${LOOPCPP_SDIST_FILE}")
    if(EXISTS "${sdist}")
        file(SHA256 "${sdist}" actual)
        if(NOT actual STREQUAL LOOPCPP_LLAMA_SDIST_SHA256)
            message(WARNING "loopcpp: cached ${sdist} is corrupt, downloading it again")
            file(REMOVE "${sdist}")
        endif()
    endif()
    if(NOT EXISTS "${sdist}")
        message(STATUS "loopcpp: downloading llama-cpp-python==${LOOPCPP_LLAMA_CPP_PYTHON_VERSION} sdist with pip")
        set(tmp "${cache}/download-tmp")
        file(REMOVE_RECURSE "${tmp}")
        # --no-binary for this one package only: ':all:' would also build its build deps from source.
        loopcpp_cachedir_query(pip pip)
        execute_process(
            COMMAND ${pip} download --no-deps
                    --no-binary llama-cpp-python
                    "llama-cpp-python==${LOOPCPP_LLAMA_CPP_PYTHON_VERSION}" -d "${tmp}"
            RESULT_VARIABLE rc OUTPUT_VARIABLE pip_out ERROR_VARIABLE pip_err)
        if(NOT rc EQUAL 0 OR NOT EXISTS "${tmp}/${LOOPCPP_SDIST_FILE}")
            message(FATAL_ERROR
                "loopcpp: could not download the llama-cpp-python sdist with pip:\n${pip_err}\n"
                "For an offline build pass -DLOOPCPP_LLAMA_SOURCE=/path/to/${LOOPCPP_SDIST_FILE} "
                "(or a llama.cpp tree at commit ${LOOPCPP_LLAMA_COMMIT}) through CMAKE_ARGS.")
        endif()
        loopcpp_check_sha256("${tmp}/${LOOPCPP_SDIST_FILE}")
        file(RENAME "${tmp}/${LOOPCPP_SDIST_FILE}" "${sdist}")
        file(REMOVE_RECURSE "${tmp}")
    endif()
    set(${out} "${sdist}" PARENT_SCOPE)
endfunction()

# Unpacks the pristine llama.cpp tree (only what libllama needs) into `dest`.
function(loopcpp_unpack_pristine dest)
    set(stamp "${dest}.stamp")
    if(LOOPCPP_LLAMA_SOURCE AND IS_DIRECTORY "${LOOPCPP_LLAMA_SOURCE}")
        set(tree "${LOOPCPP_LLAMA_SOURCE}")
        if(EXISTS "${tree}/vendor/llama.cpp/include/llama.h")
            set(tree "${tree}/vendor/llama.cpp")
        endif()
        if(NOT EXISTS "${tree}/include/llama.h")
            message(FATAL_ERROR "loopcpp: LOOPCPP_LLAMA_SOURCE=${LOOPCPP_LLAMA_SOURCE} is not a llama.cpp tree (no include/llama.h)")
        endif()
        set(key "dir:${tree}:with-server")
    else()
        if(LOOPCPP_LLAMA_SOURCE)
            set(sdist "${LOOPCPP_LLAMA_SOURCE}")
            loopcpp_check_sha256("${sdist}")
        else()
            loopcpp_fetch_sdist(sdist)
        endif()
        set(key "sdist:${LOOPCPP_LLAMA_SDIST_SHA256}:with-server")  # a new key re-unpacks older build dirs
    endif()
    loopcpp_is_current("${dest}" "${key}" current)
    if(current)
        return()
    endif()
    file(REMOVE_RECURSE "${dest}")
    set(parts CMakeLists.txt LICENSE cmake ggml include src vendor licenses common tools scripts)
    if(DEFINED tree)
        foreach(p IN LISTS parts)
            if(EXISTS "${tree}/${p}")
                file(COPY "${tree}/${p}" DESTINATION "${dest}")
            endif()
        endforeach()
    else()
        message(STATUS "loopcpp: unpacking llama.cpp from ${sdist}")
        set(unpack "${dest}.unpack")
        file(REMOVE_RECURSE "${unpack}")
        file(MAKE_DIRECTORY "${unpack}")
        list(TRANSFORM parts PREPEND "${LOOPCPP_SDIST_NAME}/vendor/llama.cpp/" OUTPUT_VARIABLE members)
        execute_process(COMMAND ${CMAKE_COMMAND} -E tar xzf "${sdist}" -- ${members}
                        WORKING_DIRECTORY "${unpack}" RESULT_VARIABLE rc)
        if(NOT rc EQUAL 0)
            message(FATAL_ERROR "loopcpp: could not unpack ${sdist}")
        endif()
        file(RENAME "${unpack}/${LOOPCPP_SDIST_NAME}/vendor/llama.cpp" "${dest}")
        file(REMOVE_RECURSE "${unpack}")
    endif()
    file(WRITE "${stamp}" "${key}")
endfunction()

# Copies the pristine tree, applies the `patches` (a list, in order) to the copy and syncs changed
# files into `dest`.
function(loopcpp_patch_tree pristine patches dest)
    file(READ "${pristine}.stamp" key)
    foreach(patch IN LISTS patches)
        file(SHA256 "${patch}" patch_hash)
        string(APPEND key "+${patch_hash}")
    endforeach()
    set(stamp "${dest}.stamp")
    loopcpp_is_current("${dest}" "${key}" current)
    if(current)
        return()
    endif()
    set(stage "${dest}.stage")
    file(REMOVE_RECURSE "${stage}")
    execute_process(COMMAND ${CMAKE_COMMAND} -E copy_directory "${pristine}" "${stage}")
    find_program(LOOPCPP_GIT git)
    find_program(LOOPCPP_PATCH patch)
    get_filename_component(stage_parent "${stage}" DIRECTORY)
    foreach(patch IN LISTS patches)
        if(LOOPCPP_GIT)
            # The ceiling keeps git from finding an enclosing repository (the build dir may sit in one).
            set(cmd ${CMAKE_COMMAND} -E env "GIT_CEILING_DIRECTORIES=${stage_parent}"
                    "${LOOPCPP_GIT}" apply --whitespace=nowarn "${patch}")
        elseif(LOOPCPP_PATCH)
            set(cmd "${LOOPCPP_PATCH}" -p1 --forward --batch -i "${patch}")
        else()
            message(FATAL_ERROR "loopcpp: applying ${patch} needs git or patch on PATH")
        endif()
        file(SIZE "${patch}" patch_size)
        if(patch_size EQUAL 0)
            continue()
        endif()
        execute_process(COMMAND ${cmd} WORKING_DIRECTORY "${stage}"
                        RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
        if(NOT rc EQUAL 0)
            message(FATAL_ERROR
                "loopcpp: the patch ${patch} does not apply to llama.cpp ${LOOPCPP_LLAMA_COMMIT}:\n${out}${err}\n"
                "The patch must be made against the pristine tree in ${pristine}.")
        endif()
    endforeach()
    # copy_directory_if_different keeps timestamps of unchanged files: incremental rebuilds.
    execute_process(COMMAND ${CMAKE_COMMAND} -E copy_directory_if_different "${stage}" "${dest}"
                    RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "loopcpp: could not write the patched tree to ${dest}")
    endif()
    file(REMOVE_RECURSE "${stage}")
    file(WRITE "${stamp}" "${key}")
endfunction()
